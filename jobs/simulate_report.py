"""The simulator's results for people and programs: a table, a JSON document, a hit-rate plot.

The plot is hit rate against budget, one line per policy. SVG is written by
:func:`render_svg_plot`, a small pure function, so the command needs no plotting library;
PNG needs matplotlib (the optional ``plot`` extra) and says so when it is missing.
"""

from __future__ import annotations

__all__ = ["format_table", "render_svg_plot", "results_document", "write_plot"]

import importlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pypimirror.byteunits import format_bytes
from pypimirror.jobs.simulate import CompactTrace, PolicyResult

from pypimirror.errors import StorageError

# Line styles that tell the policies apart without colour.
_DASHES = ("", "8 4", "2 3", "10 3 2 3", "4 4", "1 2")
_MARKERS = ("circle", "square", "triangle", "diamond", "circle", "square")
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#9467bd", "#8c564b")


def format_table(trace: CompactTrace, results: Sequence[PolicyResult], skipped_lines: int) -> str:
    """The results as an aligned text table, one row per budget and policy, with the trace's totals."""
    lines = [
        f"{trace.requests} requests for {trace.distinct_files} listed files "
        f"({format_bytes(trace.distinct_bytes)}); {trace.unlisted_requests} requests for "
        f"{trace.unlisted_files} files the stored pages do not list, and {skipped_lines} malformed "
        "log lines, left out",
        f"{'budget':>12}  {'policy':<14}{'requests hit':>13}{'bytes hit':>11}{'upstream':>14}",
    ]
    for r in results:
        lines.append(
            f"{format_bytes(r.budget):>12}  {r.policy:<14}{100 * r.request_hit_rate:>12.1f}%"
            f"{100 * r.byte_hit_rate:>10.1f}%{format_bytes(r.upstream_bytes):>14}"
        )
    return "\n".join(lines) + "\n"


def results_document(trace: CompactTrace, results: Sequence[PolicyResult], skipped_lines: int) -> dict[str, Any]:
    """The ``--json`` document: the trace's totals and one entry per budget and policy."""
    return {
        "requests": trace.requests,
        "distinct_files": trace.distinct_files,
        "distinct_bytes": trace.distinct_bytes,
        "skipped_lines": skipped_lines,
        "unlisted_requests": trace.unlisted_requests,
        "unlisted_files": trace.unlisted_files,
        "results": [
            {
                "policy": r.policy,
                "budget": r.budget,
                "request_hit_rate": r.request_hit_rate,
                "byte_hit_rate": r.byte_hit_rate,
                "upstream_bytes": r.upstream_bytes,
                "hits": r.hits,
                "hit_bytes": r.hit_bytes,
            }
            for r in results
        ],
    }


def write_plot(results: Sequence[PolicyResult], out: Path) -> None:
    """Write the plot to ``out``: SVG by :func:`render_svg_plot`, PNG with matplotlib."""
    suffix = out.suffix.lower()
    if suffix == ".svg":
        _write(out, render_svg_plot(results).encode("utf-8"))
    elif suffix == ".png":
        _write_png(results, out)
    else:
        raise StorageError(f"cannot plot to {str(out)!r}: the file name must end in .svg or .png")


def render_svg_plot(results: Sequence[PolicyResult], *, width: int = 640, height: int = 400) -> str:
    """Request hit rate (0–100 %) against budget (log scale when budgets span 4× or more), one line per policy.

    Each policy has its own dash pattern and marker as well as its colour, and the legend
    names it, so the plot reads in black and white.
    """
    left, right, top, bottom = 70, 150, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    budgets = sorted({r.budget for r in results})
    policies = list(dict.fromkeys(r.policy for r in results))
    low, high = (budgets[0], budgets[-1]) if budgets else (1, 1)
    log_scale = low > 0 and high >= 4 * low

    def x_of(budget: int) -> float:
        if high == low:
            return left + plot_w / 2
        if log_scale:
            return left + plot_w * (math.log(budget) - math.log(low)) / (math.log(high) - math.log(low))
        return left + plot_w * (budget - low) / (high - low)

    def y_of(rate: float) -> float:
        return top + plot_h * (1 - rate)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>Request hit rate by cache budget</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
    ]
    for tick in range(0, 101, 20):
        y = y_of(tick / 100)
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#dddddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{tick} %</text>')
    for budget in budgets:
        x = x_of(budget)
        parts.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="black"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{escape(format_bytes(budget))}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">cache budget'
        f'{" (log scale)" if log_scale else ""}</text>'
    )
    parts.append(
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">requests served from the cache</text>'
    )
    for index, policy in enumerate(policies):
        colour, dash = _COLOURS[index % len(_COLOURS)], _DASHES[index % len(_DASHES)]
        points = sorted((r.budget, r.request_hit_rate) for r in results if r.policy == policy)
        coords = " ".join(f"{x_of(b):.1f},{y_of(rate):.1f}" for b, rate in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for b, rate in points:
            parts.append(_marker(_MARKERS[index % len(_MARKERS)], x_of(b), y_of(rate), colour))
        legend_y = top + 10 + 20 * index
        legend_x = left + plot_w + 12
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 30}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        parts.append(_marker(_MARKERS[index % len(_MARKERS)], legend_x + 15, legend_y, colour))
        parts.append(f'<text x="{legend_x + 36}" y="{legend_y + 4}">{escape(policy)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}"/>'
    if shape == "triangle":
        return f'<polygon points="{x:.1f},{y - 4.5:.1f} {x - 4.5:.1f},{y + 3.5:.1f} {x + 4.5:.1f},{y + 3.5:.1f}" fill="{colour}"/>'
    if shape == "diamond":
        return f'<polygon points="{x:.1f},{y - 5:.1f} {x - 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x + 5:.1f},{y:.1f}" fill="white" stroke="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'


def _write_png(results: Sequence[PolicyResult], out: Path) -> None:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise StorageError(
            f"cannot write {str(out)!r}: a PNG plot needs matplotlib (pip install 'pypimirror[plot]'); "
            "an .svg plot needs nothing"
        ) from None
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(figsize=(6.4, 4.0))
    for index, policy in enumerate(dict.fromkeys(r.policy for r in results)):
        points = sorted((r.budget, r.request_hit_rate * 100) for r in results if r.policy == policy)
        axes.plot(
            [p[0] for p in points], [p[1] for p in points], label=policy,
            linestyle=("-", "--", ":", "-.")[index % 4], marker="osv^D"[index % 5],
        )
    axes.set_xscale("log")
    axes.set_xlabel("cache budget (bytes)")
    axes.set_ylabel("requests served from the cache (%)")
    axes.set_ylim(0, 100)
    axes.legend()
    try:
        figure.savefig(out, format="png", dpi=100)
    except OSError as exc:
        raise StorageError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from exc
    finally:
        pyplot.close(figure)


def _write(out: Path, data: bytes) -> None:
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise StorageError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from exc
