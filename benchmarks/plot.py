"""Bar charts for the benchmark scripts, as plain SVG text (no plotting package needed).

    from plot import bar_chart
    svg = bar_chart("textbook encoder layer", [("S=512", [("graphc", 62.9, 55.1), ...]),
                                                ("S=2048", [...])],
                    unit="ms", note="2 cores, load 1.2")
    Path("docs/benchmarks_layer.svg").write_text(svg)

One panel per group (a sequence length, say), each with its own scale from 0, one
horizontal bar per peer: its length the median, its value written at its end, and a
thin mark at the minimum where one is given. A bar whose name is in ``highlight`` is
drawn in a second colour. Every label is escaped, so any peer name is safe to draw.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 760
BAR_H, GAP, LABEL_W, VALUE_W = 18, 6, 120, 90
TOP, PANEL_GAP = 48, 30
COLOUR, HIGHLIGHT, MARK = "#8da0cb", "#fc8d62", "#333333"


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _nice_max(v: float) -> float:
    """The smallest of 1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8 times a power of ten at or
    above ``v`` (its quarters are round numbers too)."""
    if v <= 0:
        return 1.0
    p = 10.0 ** math.floor(math.log10(v))
    return next(m * p for m in (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10) if m * p >= v * 0.999999)


def bar_chart(title: str, panels, *, unit: str = "ms", note: str = "",
              highlight=("graphc",)) -> str:
    """The SVG text of a chart: ``panels`` is a list of (panel title, rows), each row
    (label, value) or (label, value, minimum); a value of None (a peer that failed) is
    drawn as a label with "failed"."""
    panels = [(str(t), [tuple(r) for r in rows]) for t, rows in panels]
    if not panels or not any(rows for _, rows in panels):
        raise ValueError("bar_chart: nothing to draw (no panel has a row)")
    minima = any(len(r) > 2 and r[2] is not None for _, rows in panels for r in rows)
    plot_w = WIDTH - LABEL_W - VALUE_W - 20
    out, y = [], TOP
    for ptitle, rows in panels:
        vals = [r[1] for r in rows if r[1] is not None]
        for v in vals:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"bar_chart: panel {ptitle!r}: a value must be a finite "
                                 f"number >= 0 or None, got {v!r}")
        top = _nice_max(max(vals, default=0.0))
        out.append(f'<text x="10" y="{y}" font-weight="bold">{escape(ptitle)}</text>')
        y += 10
        x0 = LABEL_W + 10
        h = len(rows) * (BAR_H + GAP)
        for k in range(5):                                   # grid and scale
            gx = x0 + plot_w * k / 4
            out.append(f'<line x1="{gx:.1f}" y1="{y}" x2="{gx:.1f}" y2="{y + h}" '
                       'stroke="#dddddd"/>')
            out.append(f'<text x="{gx:.1f}" y="{y + h + 14}" font-size="10" '
                       f'text-anchor="middle">{_fmt(top * k / 4)}</text>')
        for label, value, *rest in rows:
            cy = y + BAR_H / 2 + 4
            out.append(f'<text x="{x0 - 6}" y="{cy:.1f}" text-anchor="end">'
                       f'{escape(str(label))}</text>')
            if value is None:
                out.append(f'<text x="{x0 + 4}" y="{cy:.1f}" fill="#aa0000">failed</text>')
            else:
                w = plot_w * value / top
                fill = HIGHLIGHT if label in highlight else COLOUR
                out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{BAR_H}" '
                           f'fill="{fill}"><title>{escape(str(label))}: {_fmt(value)} '
                           f'{escape(unit)}</title></rect>')
                if rest and rest[0] is not None and 0 <= rest[0] <= top:
                    mx = x0 + plot_w * rest[0] / top
                    out.append(f'<line x1="{mx:.1f}" y1="{y}" x2="{mx:.1f}" '
                               f'y2="{y + BAR_H}" stroke="{MARK}" stroke-width="2"/>')
                out.append(f'<text x="{x0 + w + 4:.1f}" y="{cy:.1f}">{_fmt(value)} '
                           f'{escape(unit)}</text>')
            y += BAR_H + GAP
        y += 14 + PANEL_GAP
    notes = textwrap.wrap(note, 125) if note else []
    height = y + 13 * len(notes)
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
            f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
            f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
            f'<text x="10" y="38" font-size="10" fill="#555555">bars: median {escape(unit)}'
            f' (shorter is faster){"; dark mark: minimum" if minima else ""}</text>']
    tail = [f'<text x="10" y="{y + 13 * k - 4}" font-size="10" fill="#555555">'
            f'{escape(line)}</text>' for k, line in enumerate(notes)] + ["</svg>"]
    return "\n".join(head + out + tail) + "\n"


def write_bar_chart(path, title: str, panels, **kw) -> Path:
    """Write :func:`bar_chart`'s SVG to ``path`` (created or replaced); returns the path."""
    path = Path(path)
    path.write_text(bar_chart(title, panels, **kw), encoding="utf-8")
    return path
