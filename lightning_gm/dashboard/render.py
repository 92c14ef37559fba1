"""The leaderboard as a self-contained HTML page (no server, no network) and as a terminal table.

Every string that comes from a run (names, paths, config values) is written as escaped text: the
table is rendered here with :func:`html.escape`, the curves' data travels in a JSON block whose ``<``
are escaped, and the page's script only ever sets ``textContent``. A run named ``<script>`` stays text.

The page fits a 1,280 px window: columns that no shown run fills are left out, long labels wrap inside their
cells, and a table still wider than the window scrolls inside its own box, never the page. A number is shown with
what produced it: the estimator (with its subset or schedule), its standard error, the conservative counterpart
beside it when there is one, the AIS effective sample size, and a flag for the run's warnings.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from typing import Any, Iterable, Optional

from lightning_gm.dashboard.collect import RunRecord

__all__ = ["COLUMNS", "render_html", "render_table", "sort_runs", "default_curves"]

#: (key, header, format, always shown) of each leaderboard column
COLUMNS: list[tuple[str, str, str, bool]] = [
    ("experiment", "experiment", "s", True),
    ("run_name", "run", "s", True),
    ("family", "family", "s", True),
    ("model", "model", "s", True),
    ("dataset", "dataset", "s", True),
    ("binarize", "binarisation", "s", False),
    ("test_nll", "test NLL (nats)", "nll", True),
    ("nll_conservative", "conservative NLL", "cons", False),
    ("bpd", "bits/dim", ".4f", False),
    ("estimator", "estimator", "est", True),
    ("ais_ess", "AIS ESS", "ess", False),
    ("fd_lenet", "FD (LeNet)", ".2f", False),
    ("precision", "precision", ".3f", False),
    ("recall", "recall", ".3f", False),
    ("best_score", "best validation", "val", False),
    ("sweep", "sweep value", "sweep", False),
    ("num_parameters", "params", ",d", False),
    ("epochs", "epochs", "d", False),
    ("wall_time_s", "fit time (s)", ".0f", False),
    ("status", "status", "status", True),
]


def _cell(rec: RunRecord, key: str, fmt: str) -> str:
    value = getattr(rec, key)
    if fmt == "sweep":
        if not value or value.get("value") is None:
            return f"#{value['trial']} {str(value.get('state', '')).lower()}" if value else "-"
        return f"#{value.get('trial')} {value.get('metric')} {value['value']:.4g}"
    if fmt == "status":
        flag = f" ⚠ {len(rec.warnings)} warning{'s' if len(rec.warnings) > 1 else ''}" if rec.warnings else ""
        return f"{value}{flag}"
    if value is None or value == "":
        return "-"
    if fmt == "nll":
        err = f" ± {rec.nll_stderr:.2f}" if rec.nll_stderr is not None else ""
        return f"{value:.2f}{err}"
    if fmt == "cons":
        err = f" ± {rec.nll_conservative_stderr:.2f}" if rec.nll_conservative_stderr is not None else ""
        return f"{value:.2f}{err}"
    if fmt == "est":
        return value + (f"; conservative: {rec.conservative_estimator}" if rec.conservative_estimator else "")
    if fmt == "ess":
        return f"{value:.3g} of {rec.ais_runs}" if rec.ais_runs else f"{value:.3g}"
    if fmt == "val":
        return f"{rec.monitor} {value:.4g}" if rec.monitor else f"{value:.4g}"
    if fmt == "s":
        return str(value)
    return format(value, fmt)


#: the page's columns: (header, the RunRecord fields fused into the cell, the first one's format, always shown);
#: the page fuses related fields (run, model, data, sample quality) so that it fits a 1,280 px window
PAGE_COLUMNS: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("run", ("experiment", "run_name"), "run", True),
    ("model", ("model", "family"), "model", True),
    ("data", ("dataset", "binarize"), "data", True),
    ("test NLL (nats)", ("test_nll",), "nll", True),
    ("conservative NLL", ("nll_conservative",), "cons", False),
    ("bits/dim", ("bpd",), ".4f", False),
    ("estimator", ("estimator",), "est", True),
    ("AIS ESS", ("ais_ess",), "ess", False),
    ("samples: FD (LeNet), precision, recall", ("fd_lenet", "precision", "recall"), "quality", False),
    ("best validation", ("best_score",), "val", False),
    ("sweep value", ("sweep",), "sweep", False),
    ("params", ("num_parameters",), ",d", False),
    ("training", ("epochs", "wall_time_s"), "training", False),
    ("status", ("status",), "status", True),
]


def _page_cell(rec: RunRecord, keys: tuple[str, ...], fmt: str) -> str:
    if fmt == "run":
        return f"{rec.experiment}/{rec.run_name}" if rec.experiment else rec.run_name
    if fmt == "model":
        return rec.model or rec.family or "-"
    if fmt == "data":
        return " · ".join(v for v in (rec.dataset, rec.binarize) if v) or "-"
    if fmt == "training":
        epochs = f"{rec.epochs} epoch{'s' if rec.epochs != 1 else ''}" if rec.epochs is not None else ""
        took = f"{rec.wall_time_s:.0f} s" if rec.wall_time_s is not None else ""
        return ", ".join(p for p in (epochs, took) if p) or "-"
    if fmt == "quality":
        parts = [f"{v:{f}}" if v is not None else "-" for v, f in
                 ((rec.fd_lenet, ".2f"), (rec.precision, ".3f"), (rec.recall, ".3f"))]
        return ", ".join(parts)
    return _cell(rec, keys[0], fmt)


def _filled(rec: RunRecord, key: str) -> bool:
    value = getattr(rec, key)
    return value not in (None, "", {}, [])


def shown_columns(runs: list[RunRecord]) -> list[tuple[str, str, str, bool]]:
    """The columns to show: the essential ones, and every other one that at least one run fills."""
    return [c for c in COLUMNS if c[3] or any(_filled(r, c[0]) for r in runs)]


def sort_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """By dataset and binarisation (the numbers that compare), then test NLL (best first; none last)."""
    return sorted(runs, key=lambda r: (r.dataset or "~", r.binarize, r.test_nll if r.test_nll is not None else math.inf,
                                       r.experiment, r.run_name))


def render_table(runs: Iterable[RunRecord]) -> str:
    """The leaderboard as a plain-text table for the terminal (the columns some run fills)."""
    runs = list(runs)
    keys = shown_columns(runs)
    rows = [[h for _, h, _, _ in keys]] + [[_cell(r, k, f) for k, _, f, _ in keys] for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keys))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    warned = [f"  ⚠ {r.experiment}/{r.run_name}: {w}" for r in runs for w in r.warnings]
    return "\n".join(lines + (["", "warnings:"] + warned if warned else []))


def default_curves(runs: list[RunRecord], limit: int = 8) -> tuple[str, list[int]]:
    """The metric drawn first and the runs ticked for it, chosen from the runs shown: the validation metric
    most of them monitor (their best checkpoint's metric), and up to ``limit`` runs that logged it, on the
    dataset most of those runs share."""
    with_curves = [r for r in runs if r.curves]
    if not with_curves:
        return "", []
    monitors = Counter(r.monitor for r in with_curves if r.monitor and r.monitor in r.curves)
    logged = Counter(m for r in with_curves for m in r.curves if m.startswith("val/"))
    metric = (monitors.most_common(1) or logged.most_common(1) or [(sorted(with_curves[0].curves)[0], 0)])[0][0]
    having = [i for i, r in enumerate(runs) if metric in r.curves]
    dataset = Counter(runs[i].dataset for i in having).most_common(1)[0][0]
    return metric, [i for i in having if runs[i].dataset == dataset][:limit]


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1em;color:#222;max-width:1600px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.4em}
.table-wrap{overflow-x:auto;max-width:100%;border:1px solid #ddd}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#eef;cursor:pointer;user-select:none;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap}td.est{min-width:9em;max-width:16em}td.run{max-width:14em}
td.status{max-width:11em}td.data{overflow-wrap:anywhere;min-width:6em}
tr.bad td{color:#a33}tr.warn td.status{color:#a60;font-weight:600}
.controls{margin:.6em 0}.legend span{margin-right:1.2em;font-size:12px;white-space:nowrap}
#curves svg{border:1px solid #ccc;background:#fff;width:100%;max-width:900px;height:auto}
#curves text{font-size:12px;fill:#333}#curves line.grid{stroke:#e6e6e6}
.samples{display:flex;flex-wrap:wrap;gap:16px}.samples figure{margin:0}
.samples img{width:300px;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:12px;max-width:300px;overflow-wrap:anywhere}
ul.warnings li{color:#a60}
"""

_SCRIPT = """
const RUNS = JSON.parse(document.getElementById('runs-data').textContent);
const table = document.getElementById('leaderboard');
const body = table.tBodies[0];
const dsel = document.getElementById('dataset');
function tickRuns(){
  // the runs drawn: those on the chosen dataset that logged the chosen metric (at most 8)
  const d = dsel.value, metric = msel.value; let n = 0;
  document.querySelectorAll('.pick').forEach(c => {
    const r = RUNS[+c.value];
    c.checked = (d === '' || r.dataset === d) && !!(r.curves || {})[metric] && n < 8 && !!(++n);
  });
}
function applyFilter(redraw){
  const d = dsel.value;
  for (const tr of body.rows){ tr.hidden = !(d === '' || tr.dataset.dataset === d); }
  location.hash = d ? 'dataset=' + encodeURIComponent(d) : '';
  if (redraw){ tickRuns(); draw(); }
}
dsel.addEventListener('change', () => applyFilter(true));
for (const th of table.tHead.rows[0].cells){
  th.addEventListener('click', () => {
    const i = th.cellIndex, asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    const rows = Array.from(body.rows);
    const key = tr => { const c = tr.cells[i]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; };
    rows.sort((a, b) => { const x = key(a), y = key(b);
      if (typeof x === 'number' && typeof y === 'number') return asc ? x - y : y - x;
      return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x)); });
    for (const r of rows) body.appendChild(r);
  });
}
const msel = document.getElementById('metric'), svg = document.getElementById('plot');
const NS = 'http://www.w3.org/2000/svg', COLORS = ['#1f77b4','#d62728','#2ca02c','#9467bd','#ff7f0e','#8c564b','#e377c2','#17becf'];
function el(tag, attrs, text){ const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text; svg.appendChild(e); return e; }
function ticks(lo, hi, n){
  // about n round values (1, 2, 5 x 10^k) covering [lo, hi]
  if (hi === lo){ hi = lo + 1; lo = lo - 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const out = []; for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}
function fmt(v){ const a = Math.abs(v); return (a >= 1e4 || (a > 0 && a < 1e-3)) ? v.toExponential(1) : String(+v.toPrecision(6)); }
function draw(){
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const legend = document.getElementById('legend'); legend.textContent = '';
  const metric = msel.value, chosen = Array.from(document.querySelectorAll('.pick:checked')).map(c => +c.value);
  // metrics.csv counts epochs from 0; the chart, like the progress bar, from 1
  const series = chosen.map(i => [i, ((RUNS[i].curves || {})[metric] || []).map(p => [p[0] + 1, p[1]])]).filter(s => s[1].length);
  const W = 900, H = 360, L = 80, R = 20, T = 15, B = 50;
  el('text', {x: L + (W - L - R) / 2, y: H - 8, 'text-anchor': 'middle', class: 'axis-title'}, 'epoch');
  el('text', {x: 14, y: T + (H - T - B) / 2, 'text-anchor': 'middle', class: 'axis-title',
              transform: `rotate(-90 14 ${T + (H - T - B) / 2})`}, metric || '(no metric)');
  if (!series.length){ el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle'}, 'tick runs in the table to draw their curves'); return; }
  const pts = series.flatMap(s => s[1]);
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  const xt = ticks(x0, x1, 8), yt = ticks(y0, y1, 6);
  x0 = Math.min(x0, xt[0]); x1 = Math.max(x1, xt[xt.length - 1]); y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
  const sx = x => L + (W - L - R) * (x - x0) / ((x1 - x0) || 1), sy = y => H - B - (H - T - B) * (y - y0) / ((y1 - y0) || 1);
  for (const v of yt){ el('line', {x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: 'grid'});
    el('text', {x: L - 6, y: sy(v) + 4, 'text-anchor': 'end', class: 'tick-y'}, fmt(v)); }
  for (const v of xt){ el('line', {x1: sx(v), x2: sx(v), y1: T, y2: H - B, class: 'grid'});
    el('text', {x: sx(v), y: H - B + 16, 'text-anchor': 'middle', class: 'tick-x'}, fmt(v)); }
  el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#555'});
  el('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#555'});
  series.forEach(([i, s], n) => {
    const c = COLORS[n % COLORS.length];
    el('polyline', {fill: 'none', stroke: c, 'stroke-width': 2, points: s.map(p => sx(p[0]) + ',' + sy(p[1])).join(' ')});
    if (s.length === 1) el('circle', {cx: sx(s[0][0]), cy: sy(s[0][1]), r: 3, fill: c});
    const span = document.createElement('span'); span.style.color = c;
    span.textContent = '\\u25A0 ' + RUNS[i].experiment + '/' + RUNS[i].run_name; legend.appendChild(span);
  });
}
msel.addEventListener('change', () => { tickRuns(); draw(); });
document.querySelectorAll('.pick').forEach(c => c.addEventListener('change', draw));
const m = location.hash.match(/dataset=([^&]*)/);
if (m){ dsel.value = decodeURIComponent(m[1]); applyFilter(true); } else { draw(); }
"""


def _json_for_script(data: Any) -> str:
    # inside <script type="application/json"> only "</" could end the block early: escape every "<"
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(runs: list[RunRecord], title: str = "lightning_gm runs", metrics: Optional[list[str]] = None) -> str:
    """A self-contained HTML page: leaderboard (sortable, filterable by dataset), overlaid learning
    curves of selected runs, and each run's latest samples."""
    e = html.escape
    datasets = sorted({r.dataset for r in runs if r.dataset})
    all_metrics = metrics or sorted({m for r in runs for m in r.curves})
    default_metric, shown = default_curves(runs)
    columns = [c for c in PAGE_COLUMNS if c[3] or any(_filled(r, k) for r in runs for k in c[1])]
    head = '<th title="draw its learning curve">curve</th>' + "".join(f"<th>{e(h)}</th>" for h, _, _, _ in columns)
    rows = []
    for i, r in enumerate(runs):
        cells = []
        for _, keys, fmt, _ in columns:
            value = getattr(r, keys[0])
            num = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = _page_cell(r, keys, fmt)
            if fmt == "run":
                link = f'<a href="{e(_file_url(r.path))}" title="{e(r.path, quote=True)}">{e(text)}</a>'
                cells.append(f'<td class="run">{link}</td>')
                continue
            css = {"est": "est", "status": "status", "quality": "num", "training": "num", "data": "data"}.get(
                fmt, "num" if num and fmt not in ("val", "sweep", "model", "data") else "")
            attrs = (f' class="{css}"' if css else "") + (f' data-v="{value!r}"' if num else "")
            if fmt == "model" and r.family:
                attrs += f' title="family {e(r.family, quote=True)}"'
            if fmt == "status" and r.warnings:
                attrs += f' title="{e("; ".join(r.warnings), quote=True)}"'
            cells.append(f"<td{attrs}>{e(text)}</td>")
        checked = " checked" if i in shown else ""
        cells.insert(0, f'<td><input type="checkbox" class="pick" value="{i}"{checked} aria-label="draw this run"></td>')
        css = "bad" if r.status.startswith(("corrupt", "incomplete", "failed")) else "warn" if r.warnings else ""
        row_class = f' class="{css}"' if css else ""
        rows.append(f'<tr{row_class} data-dataset="{e(r.dataset, quote=True)}">{"".join(cells)}</tr>')
    options = '<option value="">all datasets</option>' + "".join(
        f'<option value="{e(d, quote=True)}">{e(d)}</option>' for d in datasets)
    metric_opts = "".join(
        f'<option value="{e(m, quote=True)}"{" selected" if m == default_metric else ""}>{e(m)}</option>'
        for m in all_metrics)
    figures = "".join(
        f'<figure><img alt="samples of {e(r.experiment, quote=True)}/{e(r.run_name, quote=True)}" '
        f'src="data:image/png;base64,{r.sample_png}">'
        f"<figcaption>{e(r.experiment)}/{e(r.run_name)} ({e(r.sample_name)})</figcaption></figure>"
        for r in runs if r.sample_png)
    warned = "".join(f"<li>{e(r.experiment)}/{e(r.run_name)}: {e(w)}</li>" for r in runs for w in r.warnings)
    warnings = f'<h2>Warnings</h2><ul class="warnings">{warned}</ul>' if warned else ""
    data = [{"experiment": r.experiment, "run_name": r.run_name, "dataset": r.dataset, "curves": r.curves}
            for r in runs]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{e(title)}</h1>
<p>{len(runs)} runs. Only numbers on the same dataset (and binarisation) are comparable; each NLL is
labelled with the estimator behind it (exact, ais, ais+meanfield, iwae-k, bound; with its subset or schedule when it
is not the full protocol) and its standard error, beside its conservative counterpart when one was computed.</p>
<div class="controls"><label>dataset <select id="dataset">{options}</select></label></div>
<div class="table-wrap"><table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></div>
{warnings}
<h2>Learning curves</h2>
<div class="controls"><label>metric <select id="metric">{metric_opts}</select></label>
(tick runs in the table's first column, "curve")</div>
<div id="curves"><svg id="plot" viewBox="0 0 900 360" width="900" height="360" role="img"
aria-label="learning curves"></svg><div id="legend" class="legend"></div></div>
<h2>Latest samples</h2>
<div class="samples">{figures}</div>
<script type="application/json" id="runs-data">{_json_for_script(data)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def _file_url(path: str) -> str:
    from pathlib import Path

    try:
        return Path(path).resolve().as_uri()
    except ValueError:
        return path
