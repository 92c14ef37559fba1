"""The leaderboard as a self-contained HTML page (no server, no network) and as a terminal table.

Every string that comes from a run (names, paths, config values) is written as escaped text: the
table is rendered here with :func:`html.escape`, the curves' data travels in a JSON block whose ``<``
are escaped, and the page's script only ever sets ``textContent``. A run named ``<script>`` stays text.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable, Optional

from lightning_gm.dashboard.collect import RunRecord

__all__ = ["COLUMNS", "render_html", "render_table", "sort_runs"]

#: (key, header, format) of each leaderboard column
COLUMNS: list[tuple[str, str, str]] = [
    ("experiment", "experiment", "s"),
    ("run_name", "run", "s"),
    ("family", "family", "s"),
    ("model", "model", "s"),
    ("dataset", "dataset", "s"),
    ("binarize", "binarisation", "s"),
    ("test_nll", "test NLL (nats)", "nll"),
    ("bpd", "bits/dim", ".4f"),
    ("estimator", "estimator", "s"),
    ("fd_lenet", "FD (LeNet)", ".2f"),
    ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"),
    ("num_parameters", "params", ",d"),
    ("epochs", "epochs", "d"),
    ("wall_time_s", "fit time (s)", ".0f"),
    ("status", "status", "s"),
]


def _cell(rec: RunRecord, key: str, fmt: str) -> str:
    value = getattr(rec, key)
    if value is None or value == "":
        return "-"
    if fmt == "nll":
        err = f" ± {rec.nll_stderr:.2f}" if rec.nll_stderr is not None else ""
        return f"{value:.2f}{err}"
    if fmt == "s":
        return str(value)
    return format(value, fmt)


def sort_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """By dataset and binarisation (the numbers that compare), then test NLL (best first; none last)."""
    return sorted(runs, key=lambda r: (r.dataset or "~", r.binarize, r.test_nll if r.test_nll is not None else math.inf,
                                       r.experiment, r.run_name))


def render_table(runs: Iterable[RunRecord]) -> str:
    """The leaderboard as a plain-text table for the terminal."""
    runs = list(runs)
    keys = [(k, h, f) for k, h, f in COLUMNS]
    rows = [[h for _, h, _ in keys]] + [[_cell(r, k, f) for k, _, f in keys] for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keys))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#eef;cursor:pointer;user-select:none}tr.bad td{color:#a33}td.num{text-align:right}
.samples{display:flex;flex-wrap:wrap;gap:12px}.samples figure{margin:0}.samples img{width:180px;image-rendering:pixelated}
figcaption{font-size:12px;max-width:180px;overflow-wrap:anywhere}#curves svg{border:1px solid #ccc;background:#fff}
.controls{margin:.6em 0}.legend span{margin-right:1em;font-size:12px}
"""

_SCRIPT = """
const RUNS = JSON.parse(document.getElementById('runs-data').textContent);
const table = document.getElementById('leaderboard');
const body = table.tBodies[0];
const dsel = document.getElementById('dataset');
function applyFilter(){
  const d = dsel.value;
  for (const tr of body.rows){ tr.hidden = !(d === '' || tr.dataset.dataset === d); }
  location.hash = d ? 'dataset=' + encodeURIComponent(d) : '';
}
dsel.addEventListener('change', applyFilter);
const m = location.hash.match(/dataset=([^&]*)/);
if (m){ dsel.value = decodeURIComponent(m[1]); applyFilter(); }
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
function el(tag, attrs){ const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; }
function draw(){
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const legend = document.getElementById('legend'); legend.textContent = '';
  const metric = msel.value, chosen = Array.from(document.querySelectorAll('.pick:checked')).map(c => +c.value);
  const series = chosen.map(i => [i, (RUNS[i].curves || {})[metric] || []]).filter(s => s[1].length);
  if (!series.length) return;
  const pts = series.flatMap(s => s[1]);
  const x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0])) || 1;
  const y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  const W = 640, H = 300, P = 40, sx = x => P + (W - 2*P) * (x - x0) / ((x1 - x0) || 1), sy = y => H - P - (H - 2*P) * (y - y0) / ((y1 - y0) || 1);
  svg.appendChild(el('line', {x1: P, y1: H-P, x2: W-P, y2: H-P, stroke: '#999'}));
  svg.appendChild(el('line', {x1: P, y1: P, x2: P, y2: H-P, stroke: '#999'}));
  for (const [v, y] of [[y0, H-P], [y1, P]]){ const t = el('text', {x: 2, y: y, 'font-size': 10}); t.textContent = v.toPrecision(5); svg.appendChild(t); }
  series.forEach(([i, s], n) => {
    const c = COLORS[n % COLORS.length];
    svg.appendChild(el('polyline', {fill: 'none', stroke: c, 'stroke-width': 2, points: s.map(p => sx(p[0]) + ',' + sy(p[1])).join(' ')}));
    const span = document.createElement('span'); span.style.color = c; span.textContent = RUNS[i].experiment + '/' + RUNS[i].run_name; legend.appendChild(span);
  });
}
msel.addEventListener('change', draw);
document.querySelectorAll('.pick').forEach(c => c.addEventListener('change', draw));
draw();
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
    default_metric = next((m for m in ("val/loss", "val/nll", "val/elbo") if m in all_metrics),
                          all_metrics[0] if all_metrics else "")
    head = "".join(f"<th>{e(h)}</th>" for _, h, _ in COLUMNS) + "<th>curves</th><th>folder</th>"
    # curves drawn at first: up to 8 runs on the same data as the first run that has curves
    first = next((r for r in runs if r.curves), None)
    same = [i for i, r in enumerate(runs) if r.curves and first and (r.dataset, r.binarize) == (first.dataset, first.binarize)]
    shown = set(same[:8])
    rows = []
    for i, r in enumerate(runs):
        cells = []
        for key, _, fmt in COLUMNS:
            value = getattr(r, key)
            num = isinstance(value, (int, float)) and not isinstance(value, bool)
            attr = f' class="num" data-v="{value!r}"' if num else ""
            cells.append(f"<td{attr}>{e(_cell(r, key, fmt))}</td>")
        checked = " checked" if i in shown else ""
        cells.append(f'<td><input type="checkbox" class="pick" value="{i}"{checked}></td>')
        cells.append(f'<td><a href="{e(_file_url(r.path))}">{e(r.path)}</a></td>')
        bad = ' class="bad"' if r.status.startswith(("corrupt", "incomplete", "failed")) else ""
        rows.append(f'<tr{bad} data-dataset="{e(r.dataset, quote=True)}">{"".join(cells)}</tr>')
    options = '<option value="">all datasets</option>' + "".join(
        f'<option value="{e(d, quote=True)}">{e(d)}</option>' for d in datasets)
    metric_opts = "".join(
        f'<option value="{e(m, quote=True)}"{" selected" if m == default_metric else ""}>{e(m)}</option>'
        for m in all_metrics)
    figures = "".join(
        f'<figure><img alt="samples" src="data:image/png;base64,{r.sample_png}">'
        f"<figcaption>{e(r.experiment)}/{e(r.run_name)} ({e(r.sample_name)})</figcaption></figure>"
        for r in runs if r.sample_png)
    data = [{"experiment": r.experiment, "run_name": r.run_name, "curves": r.curves} for r in runs]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{e(title)}</h1>
<p>{len(runs)} runs. Only numbers on the same dataset (and binarisation) are comparable; each NLL is
labelled with the estimator behind it (exact, ais, ais+meanfield, iwae-k, bound) and its standard error.</p>
<div class="controls"><label>dataset <select id="dataset">{options}</select></label></div>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Learning curves</h2>
<div class="controls"><label>metric <select id="metric">{metric_opts}</select></label>
(tick runs in the table's "curves" column)</div>
<div id="curves"><svg id="plot" width="640" height="300"></svg><div id="legend" class="legend"></div></div>
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
