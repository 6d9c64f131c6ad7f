"""The hit-rate chart of the info page: the last days' downloads as inline SVG, and the same as a table.

:func:`render_hit_chart` is a pure function of the day windows of a
:class:`~pypimirror.hitrate.HitSummary`. One bar per day, its height the day's downloads
(scaled to the busiest day), the part served locally filled with a hatch pattern and a dark
fill, the rest left as an outline; above each bar the request hit rate as text, below it the
date. So it reads without colour (hatch versus empty, and the numbers), without script, and to
a screen reader (``role="img"``, a ``<title>`` and a ``<desc>``); the table after it has every
figure for whoever cannot see the picture at all. Every text is HTML-escaped.
"""

from __future__ import annotations

__all__ = ["format_rate", "render_hit_chart"]

import html
import time
from collections.abc import Sequence

from pypimirror.hitrate import HitWindow

# Geometry of the drawing, in SVG user units.
_SLOT_W = 80
_BAR_W = 44
_TOP = 34  # room for the rate above the tallest bar
_PLOT_H = 120
_LABELS_H = 40
_LEGEND_H = 26


def format_rate(rate: float | None) -> str:
    """A rate 0–1 as ``83.1 %``, or ``–`` when there is nothing to divide."""
    return "–" if rate is None else f"{100 * rate:.1f} %"


def _day_label(window: HitWindow) -> str:
    return time.strftime("%a %m-%d", time.gmtime(window.start))


def render_hit_chart(days: Sequence[HitWindow]) -> str:
    """An HTML fragment: the SVG chart of ``days`` (oldest first) followed by its table."""
    return _svg(days) + "\n" + _table(days)


def _svg(days: Sequence[HitWindow]) -> str:
    e = _escape
    width = _SLOT_W * max(len(days), 1)
    height = _TOP + _PLOT_H + _LABELS_H + _LEGEND_H
    busiest = max((day.requests for day in days), default=0)
    first, last = (_day_label(days[0]), _day_label(days[-1])) if days else ("", "")
    total = sum(day.requests for day in days)
    local = sum(day.local_requests for day in days)
    desc = (
        f"{total:,} downloads from {first} to {last} (UTC), {local:,} of them served locally "
        f"({format_rate(local / total if total else None)}). Bar height: downloads per day; "
        "hatched part: served locally; number above a bar: the day's request hit rate."
    )
    parts = [
        f'<svg id="hit-chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="hit-chart-title hit-chart-desc">',
        '<title id="hit-chart-title">Downloads served locally, per day, last 7 days</title>',
        f'<desc id="hit-chart-desc">{e(desc)}</desc>',
        '<defs><pattern id="hit-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#2f6f4c"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern></defs>',
    ]
    baseline = _TOP + _PLOT_H
    for index, day in enumerate(days):
        x = index * _SLOT_W + (_SLOT_W - _BAR_W) // 2
        centre = index * _SLOT_W + _SLOT_W // 2
        bar_h = round(_PLOT_H * day.requests / busiest) if busiest else 0
        local_h = round(bar_h * day.local_requests / day.requests) if day.requests else 0
        label = e(_day_label(day))
        parts.append(f'<g class="hit-day"><title>{label}: {day.local_requests:,} of {day.requests:,} downloads '
                     f'served locally ({e(format_rate(day.request_rate))})</title>')
        if bar_h:
            parts.append(f'<rect x="{x}" y="{baseline - bar_h}" width="{_BAR_W}" height="{bar_h}" '
                         'fill="#fff" stroke="#222" stroke-width="1"/>')
        if local_h:
            parts.append(f'<rect x="{x}" y="{baseline - local_h}" width="{_BAR_W}" height="{local_h}" '
                         'fill="url(#hit-hatch)" stroke="#222" stroke-width="1"/>')
        parts.append(f'<text x="{centre}" y="{baseline - bar_h - 6}" text-anchor="middle" font-size="12">'
                     f'{e(format_rate(day.request_rate))}</text>')
        parts.append(f'<text x="{centre}" y="{baseline + 16}" text-anchor="middle" font-size="11">{label}</text>')
        parts.append(f'<text x="{centre}" y="{baseline + 31}" text-anchor="middle" font-size="11">'
                     f'{day.requests:,}</text></g>')
    parts.append(f'<line x1="0" y1="{baseline}" x2="{width}" y2="{baseline}" stroke="#222" stroke-width="1"/>')
    legend = baseline + _LABELS_H + 4
    parts.append(
        f'<rect x="4" y="{legend}" width="14" height="14" fill="url(#hit-hatch)" stroke="#222"/>'
        f'<text x="24" y="{legend + 12}" font-size="12">served locally</text>'
        f'<rect x="140" y="{legend}" width="14" height="14" fill="#fff" stroke="#222"/>'
        f'<text x="160" y="{legend + 12}" font-size="12">redirected or proxied</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _table(days: Sequence[HitWindow]) -> str:
    e = _escape
    rows = [
        f"<tr><td>{e(_day_label(day))}</td><td>{day.requests:,}</td><td>{day.local_requests:,}</td>"
        f"<td>{e(format_rate(day.request_rate))}</td><td>{e(format_rate(day.byte_rate))}</td></tr>"
        for day in days
    ]
    joined = "\n".join(rows)
    return f"""<table id="hit-days">
<caption>Downloads per day (UTC)</caption>
<tr><th>Day</th><th>Downloads</th><th>Served locally</th><th>Request hit rate</th><th>Byte hit rate</th></tr>
{joined}
</table>"""


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
