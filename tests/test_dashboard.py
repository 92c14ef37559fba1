"""``lightning_gm compare``: the leaderboard over run folders of several families, dataset filtering,
damaged runs listed instead of crashing, HTML escaping, and the page read back from headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from lightning_gm.cli import main
from lightning_gm.dashboard import find_runs, render_html, sort_runs
from lightning_gm.images import make_grid, save_png

EVIL = "<script>alert('x')</script>"


def _run(root: Path, experiment: str, name: str, family: str, dataset: str, nll: float, estimator: str,
         bpd: float | None = None, curve: tuple[float, ...] = (3.0, 2.0, 1.5)) -> Path:
    folder = root / experiment / name
    (folder / "samples").mkdir(parents=True)
    test = {"test/nll": nll, "test/nll_stderr": 0.25}
    if bpd is not None:
        test["test/bpd"] = bpd
    (folder / "summary.json").write_text(json.dumps({
        "experiment": experiment, "run_name": name, "status": "tested", "family": family,
        "model": f"lightning_gm.models.{family.upper()}", "data": {"dataset": dataset, "binarize": "static"},
        "test": test, "estimator": estimator, "num_parameters": 1000, "epochs": 3, "fit_wall_time_s": 12.5,
    }))
    (folder / "config.yaml").write_text("model: {}\n")
    lines = ["epoch,step,val/loss,train/loss_step"] + [f"{i},{10 * i},{v},{v + 1}" for i, v in enumerate(curve)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    save_png(make_grid(torch.rand(4, 1, 8, 8)), folder / "samples" / "samples_epoch=002.png")
    return folder


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root, "vae", "a", "vae", "mnist", 95.5, "iwae-5000", bpd=0.176)
    _run(root, "rbm", "b", "rbm", "mnist", 110.25, "ais", bpd=0.203)
    _run(root, "flow", "c", "flow", "toy2d/eight_gaussians", 2.9, "exact")
    _run(root, "vae", EVIL, "vae", "mnist", 99.0, "iwae-100")
    corrupt = root / "rbm" / "broken"
    corrupt.mkdir(parents=True)
    (corrupt / "summary.json").write_text('{"status": "fitted", "test": ')  # cut off mid-write
    half = root / "flow" / "running"
    half.mkdir(parents=True)
    (half / "config.yaml").write_text("model: {}\n")  # started, nothing written yet
    sweeps = root / "sweeps" / "s"  # a sweep's report folder is not a run
    sweeps.mkdir(parents=True)
    (sweeps / "summary.json").write_text("{}")
    return root


def test_leaderboard_from_several_families(runs):
    records = sort_runs(find_runs(runs))
    by_name = {r.run_name: r for r in records}
    assert set(by_name) == {"a", "b", "c", EVIL, "broken", "running"}
    assert {r.family for r in records if r.family} == {"vae", "rbm", "flow"}
    a = by_name["a"]
    assert (a.test_nll, a.nll_stderr, a.bpd, a.estimator, a.dataset) == (95.5, 0.25, 0.176, "iwae-5000", "mnist")
    assert a.curves["val/loss"] == [[0.0, 3.0], [1.0, 2.0], [2.0, 1.5]] and "train/loss" not in a.curves
    assert a.sample_png and a.sample_name == "samples_epoch=002.png"
    assert by_name["broken"].status.startswith("corrupt summary.json")
    assert by_name["running"].status == "incomplete: no summary.json"
    # per dataset, best NLL first; runs with no number at the end
    assert [r.run_name for r in records][:3] == ["a", EVIL, "b"]


def test_terminal_table_and_dataset_filter(runs, capsys):
    assert main(["compare", str(runs), "--dataset", "mnist"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "run", "family"]
    body = [ln for ln in lines[2:] if ln.strip() and not ln.startswith(("3 runs", "\n"))]
    assert len([ln for ln in body if "mnist" in ln]) == 3 and "eight_gaussians" not in out
    assert "95.50 ± 0.25" in out and "3 runs; dashboard:" in out
    assert (runs / "compare.html").is_file()


def test_html_escapes_run_names(runs):
    page = render_html(sort_runs(find_runs(runs)))
    assert EVIL not in page and "<script>alert" not in page
    assert html_text(EVIL) in page  # shown as text in its table cell
    assert page.count("<script") == 2  # the data block and the page's own script, nothing else


def html_text(s: str) -> str:
    import html

    return html.escape(s)


class _Rows(HTMLParser):
    """Table rows of the leaderboard as the browser left them: (hidden?, [cell texts])."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[bool, list[str]]] = []
        self._in_body = self._cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append(("hidden" in dict(attrs), []))
        elif tag == "td" and self._in_body:
            self._cell = True
            self.rows[-1][1].append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = False
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data):
        if self._cell:
            self.rows[-1][1][-1] += data


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return exe


def _browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_page_in_headless_chromium(runs, tmp_path):
    exe = _chromium()
    assert main(["compare", str(runs)]) == 0
    page = (runs / "compare.html").resolve()
    shot = tmp_path / "dashboard.png"
    out = _browser(exe, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1100", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, out.stderr[-2000:]
    # the DOM after the page's script ran, with the dataset filter taken from the URL
    dom = _browser(exe, tmp_path / "profile2", "--dump-dom", page.as_uri() + "#dataset=mnist").stdout
    parser = _Rows()
    parser.feed(dom)
    visible = [cells for hidden, cells in parser.rows if not hidden]
    assert len(parser.rows) == 6 and len(visible) == 3
    assert [c[1] for c in visible] == ["a", EVIL, "b"]  # the run named with HTML is plain text in its cell
    assert visible[0][6] == "95.50 ± 0.25" and visible[0][8] == "iwae-5000"
    assert "<polyline" in dom  # the learning curves were drawn
