"""``lightning_gm compare``: one leaderboard for every family, as a local HTML dashboard and a table."""

from lightning_gm.atomic import write_text_atomic
from lightning_gm.dashboard.collect import RunRecord, find_runs, read_run
from lightning_gm.dashboard.render import default_curves, render_html, render_table, sort_runs

__all__ = ["RunRecord", "find_runs", "read_run", "render_html", "render_table", "sort_runs", "default_curves", "main"]


def main(argv: list[str]) -> int:
    """``lightning_gm compare RUNS_DIR [--dataset D] [--output FILE] [--open]``."""
    import argparse
    import webbrowser
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="lightning_gm compare",
                                     description="Leaderboard of every run below a folder (HTML + terminal).")
    parser.add_argument("runs_dir", nargs="?", default="runs", help="folder holding run folders (default: runs)")
    parser.add_argument("--dataset", default=None, help="only runs on this dataset (e.g. mnist, binarized_mnist)")
    parser.add_argument("--output", default=None, help="HTML file to write (default: <runs_dir>/compare.html)")
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    args = parser.parse_args(argv)
    root = Path(args.runs_dir)
    if not root.is_dir():
        from lightning_gm.errors import ConfigError

        raise ConfigError(f"runs folder {root} does not exist; pass the folder your runs are in (default: runs)")
    runs = sort_runs(find_runs(root))
    if args.dataset:
        runs = [r for r in runs if r.dataset == args.dataset]
    out = Path(args.output) if args.output else root / "compare.html"
    write_text_atomic(out, render_html(runs, title=f"lightning_gm runs in {root}"))
    print(render_table(runs))
    print(f"\n{len(runs)} runs; dashboard: {out}")
    if args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0
