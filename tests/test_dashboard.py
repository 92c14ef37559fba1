"""``lightning_gm compare``: the leaderboard over run folders of several families (sweep trials included),
what stands behind each number (estimator label, conservative NLL, AIS ESS, warnings, the sweep's value), dataset
filtering, damaged runs listed instead of crashing, HTML escaping, the default curves, and the page laid out by
headless Chromium in a 1,280 px window (no page-wide scrolling, labelled and ticked axes, legible samples)."""

from __future__ import annotations

import html
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
         bpd: float | None = None, curve: tuple[float, ...] = (3.0, 2.0, 1.5), **extra) -> Path:
    folder = root / experiment / name
    (folder / "samples").mkdir(parents=True)
    test = {"test/nll": nll, "test/nll_stderr": 0.25, **extra.pop("test", {})}
    if bpd is not None:
        test["test/bpd"] = bpd
    (folder / "summary.json").write_text(json.dumps({
        "experiment": experiment, "run_name": name, "status": "tested", "family": family,
        "model": f"lightning_gm.models.{family.upper()}", "data": {"dataset": dataset, "binarize": "static"},
        "test": test, "estimator": estimator, "num_parameters": 1000, "epochs": 3, "fit_wall_time_s": 12.5,
        "monitor": "val/loss", "best_score": min(curve), **extra,
    }))
    (folder / "config.yaml").write_text("model: {}\n")
    lines = ["epoch,step,val/loss,train/loss_step"] + [f"{i},{10 * i},{v},{v + 1}" for i, v in enumerate(curve)]
    lines.append("0,0,0.5,")  # a later `validate` of the run logs at step 0: not a point of the training curve
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    save_png(make_grid(torch.rand(64, 1, 28, 28)), folder / "samples" / "samples_epoch=002.png")
    return folder


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root, "vae", "a", "vae", "mnist", 95.5, "iwae-5000", bpd=0.176)
    _run(root, "rbm", "b", "rbm", "mnist", 110.25, "ais 100x14,500", bpd=0.203,
         test={"test/nll_conservative": 112.5, "test/nll_conservative_stderr": 0.75, "test/ais_ess": 2.9,
               "test/ais_runs": 100},
         conservative_estimator="raise 100x14,500 on 1,000 of 10,000",
         warnings=["AIS ESS 2.9 of 100 runs (under 10%)"])
    _run(root, "flow", "c", "flow", "toy2d/eight_gaussians", 2.9, "exact")
    _run(root, "vae", EVIL, "vae", "mnist", 99.0, "iwae-100")
    corrupt = root / "rbm" / "broken"
    corrupt.mkdir(parents=True)
    (corrupt / "summary.json").write_text('{"status": "fitted", "test": ')  # cut off mid-write
    half = root / "flow" / "running"
    half.mkdir(parents=True)
    (half / "config.yaml").write_text("model: {}\n")  # started, nothing written yet
    sweeps = root / "sweeps" / "s"  # a sweep's report folder is not a run; its trials are
    sweeps.mkdir(parents=True)
    (sweeps / "study.json").write_text('{"study": "s", "trials": {"complete": 1}}')
    _run(root / "sweeps", "s", "trial-0000", "vae", "digits", 27.2, "iwae-1000", curve=(30.0, 28.0),
         sweep={"study": "s", "trial": 0, "metric": "val/elbo", "direction": "maximize", "value": -27.38,
                "state": "COMPLETE"})
    old = root / "sweeps" / "old"  # the report of an older version, named summary.json
    old.mkdir(parents=True)
    (old / "summary.json").write_text('{"study": "old", "trials": {}}')
    return root


def test_leaderboard_from_several_families(runs):
    records = sort_runs(find_runs(runs))
    by_name = {r.run_name: r for r in records}
    assert set(by_name) == {"a", "b", "c", EVIL, "broken", "running", "trial-0000"}
    assert {r.family for r in records if r.family} == {"vae", "rbm", "flow"}
    a = by_name["a"]
    assert (a.test_nll, a.nll_stderr, a.bpd, a.estimator, a.dataset) == (95.5, 0.25, 0.176, "iwae-5000", "mnist")
    assert a.curves["val/loss"] == [[0.0, 3.0], [1.0, 2.0], [2.0, 1.5]] and "train/loss" not in a.curves
    assert a.sample_png and a.sample_name == "samples_epoch=002.png"
    b = by_name["b"]
    assert (b.nll_conservative, b.nll_conservative_stderr, b.ais_ess, b.ais_runs) == (112.5, 0.75, 2.9, 100)
    assert b.warnings == ["AIS ESS 2.9 of 100 runs (under 10%)"] and b.estimator == "ais 100x14,500"
    assert by_name["trial-0000"].sweep["value"] == -27.38 and by_name["trial-0000"].experiment == "s"
    assert by_name["broken"].status.startswith("corrupt summary.json")
    assert by_name["running"].status == "incomplete: no summary.json"
    # per dataset, best NLL first; runs with no number at the end
    assert [r.run_name for r in records if r.dataset == "mnist"] == ["a", EVIL, "b"]
    assert [r.dataset for r in records][:4] == ["digits", "mnist", "mnist", "mnist"]


def test_terminal_table_and_dataset_filter(runs, capsys):
    assert main(["compare", str(runs), "--dataset", "mnist"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "run", "family"]
    body = [ln for ln in lines[2:] if ln.strip() and not ln.startswith(("3 runs", "\n"))]
    assert len([ln for ln in body if "mnist" in ln]) == 3 and "eight_gaussians" not in out
    assert "95.50 ± 0.25" in out and "3 runs; dashboard:" in out
    assert "112.50 ± 0.75" in out and "2.9 of 100" in out and "interrupted" not in out
    assert "warnings:\n  ⚠ rbm/b: AIS ESS 2.9 of 100 runs (under 10%)" in out
    assert "sweep value" not in lines[0]  # no run shown here is a sweep trial: no empty column
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


def test_default_curves_follow_the_runs_shown(runs):
    from lightning_gm.dashboard import default_curves

    records = sort_runs(find_runs(runs))
    metric, ticked = default_curves(records)
    assert metric == "val/loss"  # what most runs monitor
    assert {records[i].run_name for i in ticked} == {"a", "b", EVIL}  # the dataset most of them share


_MEASURE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{page}#dataset=mnist" style="border:0;width:1280px;height:1000px"></iframe>
<pre id="out"></pre><script>
document.getElementById('f').addEventListener('load', () => {{
  const d = document.getElementById('f').contentDocument, w = d.defaultView;
  const img = d.querySelector('.samples img').getBoundingClientRect();
  const texts = c => Array.from(d.querySelectorAll('#plot text.' + c)).map(t => t.textContent);
  document.getElementById('out').textContent = JSON.stringify({{
    page: d.documentElement.scrollWidth, window: w.innerWidth,
    table: d.querySelector('.table-wrap').getBoundingClientRect().right,
    xticks: texts('tick-x'), yticks: texts('tick-y'),
    titles: Array.from(d.querySelectorAll('#plot text.axis-title')).map(t => t.textContent),
    lines: d.querySelectorAll('#plot polyline').length, image: img.width,
    rows: Array.from(d.querySelectorAll('#leaderboard tbody tr')).filter(r => !r.hidden).map(r => r.cells[1].textContent)
  }});
}});
</script></body></html>"""


def test_page_in_headless_chromium(runs, tmp_path):
    exe = _chromium()
    assert main(["compare", str(runs)]) == 0
    page = (runs / "compare.html").resolve()
    shot = tmp_path / "dashboard.png"
    out = _browser(exe, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1000", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, out.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 1000) and len(set(im.convert("L").getdata())) > 20  # drawn, not blank
    # the DOM after the page's script ran, with the dataset filter taken from the URL
    dom = _browser(exe, tmp_path / "profile2", "--dump-dom", page.as_uri() + "#dataset=mnist").stdout
    parser = _Rows()
    parser.feed(dom)
    visible = [cells for hidden, cells in parser.rows if not hidden]
    assert len(parser.rows) == 7 and len(visible) == 3
    assert [c[1] for c in visible] == ["vae/a", f"vae/{EVIL}", "rbm/b"]  # a name with HTML is plain text
    assert visible[0][4] == "95.50 ± 0.25" and visible[0][7] == "iwae-5000" and visible[0][3] == "mnist · static"
    assert visible[2][5] == "112.50 ± 0.75" and visible[2][7] == "ais 100x14,500; conservative: raise 100x14,500 " \
        "on 1,000 of 10,000" and visible[2][8] == "2.9 of 100" and visible[2][-1] == "tested ⚠ 1 warning"
    assert "<polyline" in dom  # the learning curves were drawn
    # laid out in a 1,280 px window: measured by the browser through a page that frames the dashboard
    (tmp_path / "measure.html").write_text(_MEASURE.format(page=page.as_uri()))
    measured = _browser(exe, tmp_path / "profile3", "--allow-file-access-from-files", "--virtual-time-budget=5000",
                        "--dump-dom", (tmp_path / "measure.html").as_uri()).stdout
    m = json.loads(html.unescape(measured.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]))
    assert m["page"] <= m["window"] == 1280 and m["table"] <= 1280, m  # no page-wide horizontal scrolling
    assert m["titles"] == ["epoch", "val/loss"] and m["xticks"] == ["1", "1.5", "2", "2.5", "3"], m
    assert len(m["yticks"]) >= 4 and m["lines"] == 3, m  # the three ticked mnist runs, on a ticked value axis
    assert m["image"] >= 250 and m["rows"] == ["vae/a", f"vae/{EVIL}", "rbm/b"], m  # samples large enough to see
