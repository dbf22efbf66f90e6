"""The report's HTML page: an SVG scatter (hover a point for its run) and a sortable table, in
one self-contained file (no script or style from the network, so it opens offline)."""

from __future__ import annotations

import html
import json
import math

WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 180, 20, 50


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
  if hi <= lo:
    lo, hi = lo - 1, hi + 1
  raw = (hi - lo) / count
  power = 10 ** math.floor(math.log10(raw))
  step = min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=10 * power)
  first = math.floor(lo / step) * step
  return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def _scatter_svg(points, front, colours, x_label, curves=None) -> str:
  xs = [p["x"] for p in points] or [0.0, 1.0]
  ys = [p["y"] for p in points] or [0.0, 100.0]
  x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
  x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
  pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
  sx = lambda x: LEFT + (x - x0) / (x1 - x0) * pw  # noqa: E731
  sy = lambda y: TOP + ph - (y - y0) / (y1 - y0) * ph  # noqa: E731
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
  for t in x_ticks:
    out.append(f'<line x1="{sx(t):.1f}" y1="{TOP}" x2="{sx(t):.1f}" y2="{TOP + ph}" stroke="#eee"/>'
               f'<text x="{sx(t):.1f}" y="{TOP + ph + 15}" text-anchor="middle">{t:g}</text>')
  for t in y_ticks:
    out.append(f'<line x1="{LEFT}" y1="{sy(t):.1f}" x2="{LEFT + pw}" y2="{sy(t):.1f}" stroke="#eee"/>'
               f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
  out.append(f'<text x="{LEFT + pw / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
             f'{html.escape(x_label)}</text>'
             f'<text transform="translate(16,{TOP + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'WER (%)</text>')
  for family, line in (curves or {}).items():   # each family's curve, in its colour
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
    out.append(f'<polyline class="curve" points="{path}" fill="none" '
               f'stroke="{colours[family]}" stroke-width="1.5"/>')
  if front:
    path = " ".join(f"{sx(points[i]['x']):.1f},{sy(points[i]['y']):.1f}" for i in front)
    out.append(f'<polyline points="{path}" fill="none" stroke="black" stroke-dasharray="5,3"/>')
  for i, p in enumerate(points):
    r = math.sqrt(p["size"]) / 2
    ring = (f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="{r + 3:.1f}" fill="none" '
            f'stroke="black"/>' if i in front else "")
    out.append(f'{ring}<circle class="pt" cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="{r:.1f}" '
               f'fill="{colours[p["family"]]}" fill-opacity="0.75"><title>{html.escape(p["tip"])}'
               f'</title></circle>')
  for k, (family, colour) in enumerate(colours.items()):
    y = TOP + 10 + 18 * k
    out.append(f'<circle cx="{WIDTH - RIGHT + 20}" cy="{y}" r="6" fill="{colour}"/>'
               f'<text x="{WIDTH - RIGHT + 32}" y="{y + 4}">{html.escape(family)}</text>')
  y = TOP + 10 + 18 * len(colours)
  out.append(f'<line x1="{WIDTH - RIGHT + 12}" y1="{y}" x2="{WIDTH - RIGHT + 28}" y2="{y}" '
             f'stroke="black" stroke-dasharray="5,3"/><text x="{WIDTH - RIGHT + 32}" y="{y + 4}">'
             f'Pareto front</text></svg>')
  return "\n".join(out)


_SORT_JS = """
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = td => td.dataset.v === '' ? null : (isNaN(td.dataset.v) ? td.dataset.v : +td.dataset.v);
  [...body.rows].sort((a, b) => {
    const x = key(a.cells[col]), y = key(b.cells[col]);
    if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  }).forEach(r => body.appendChild(r));
}));
"""


def page(title, points, front, colours, x_label, header, table, curves=None) -> str:
  """`table` rows are (shown text, numeric value or None) cells, sorted by value when numeric;
  `curves`: family -> the (x, y) points of its curve, joined in the family's colour."""
  head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
  body = "\n".join(
      "<tr>" + "".join(f'<td data-v="{html.escape(json.dumps(v) if v is not None else text)}">'
                       f'{html.escape(text)}</td>' for text, v in row) + "</tr>"
      for row in table)
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}} th{{cursor:pointer;background:#f4f4f4}}
.pt:hover{{stroke:black;stroke-width:2}}</style></head>
<body><h2>{html.escape(title)}</h2>
<p>One point per run; marker area by FLOPs per second of audio; ringed points form the Pareto
front{"; each family joined in order of compute, through its seeds' means where the runs vary the seed" if curves else ""}.
Hover a point for its numbers; click a column to sort.</p>
{_scatter_svg(points, front, colours, x_label, curves)}
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<script>{_SORT_JS}</script></body></html>
"""
