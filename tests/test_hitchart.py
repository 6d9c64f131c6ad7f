"""The hit-rate chart as a pure function: bars, labels, accessibility, the table, escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from pypimirror.hitchart import format_rate, render_hit_chart
from pypimirror.hitrate import DAY_S, HitWindow

SVG = "{http://www.w3.org/2000/svg}"
MONDAY = 1_795_996_800  # 2026-11-30 00:00 UTC


def days(*figures: tuple[int, int]) -> list[HitWindow]:
    """Consecutive days from MONDAY with (requests, local_requests), bytes = 10 x requests."""
    return [HitWindow(MONDAY + i * DAY_S, MONDAY + (i + 1) * DAY_S, requests, local, 10 * requests, 10 * local)
            for i, (requests, local) in enumerate(figures)]


def svg_of(fragment: str) -> ET.Element:
    match = re.search(r"<svg.*</svg>", fragment, re.S)
    assert match is not None
    return ET.fromstring(match[0])  # well-formed XML, or this raises


def bars(svg: ET.Element) -> list[list[tuple[str, int, int]]]:
    """Per day: (fill, y, height) of each rect."""
    return [[(r.get("fill", ""), int(r.get("y", 0)), int(r.get("height", 0))) for r in group.iter(f"{SVG}rect")]
            for group in svg.iter(f"{SVG}g")]


@pytest.mark.parametrize(
    ("rate", "text"), [(None, "–"), (0.0, "0.0 %"), (0.8312, "83.1 %"), (1.0, "100.0 %")],
)
def test_rates_are_percentages_or_a_dash(rate, text):
    assert format_rate(rate) == text


def test_bar_heights_follow_the_downloads_and_the_hatched_part_the_local_ones():
    svg = svg_of(render_hit_chart(days((100, 80), (50, 50), (0, 0), (200, 0), (10, 5), (100, 100), (1, 1))))
    drawn = bars(svg)
    assert len(drawn) == 7
    # The busiest day (200) is the full 120 units; the baseline is at y = 154.
    assert drawn[0] == [("#fff", 154 - 60, 60), ("url(#hit-hatch)", 154 - 48, 48)]
    assert drawn[1] == [("#fff", 154 - 30, 30), ("url(#hit-hatch)", 154 - 30, 30)]
    assert drawn[2] == []  # no downloads: no bar
    assert drawn[3] == [("#fff", 154 - 120, 120)]  # nothing local: an empty outline
    assert drawn[5][1][0] == "url(#hit-hatch)"
    labels = ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]
    assert labels[:3] == ["80.0 %", "Mon 11-30", "100"]
    assert labels[6:9] == ["–", "Wed 12-02", "0"]
    assert labels[-2:] == ["served locally", "redirected or proxied"]  # the legend, in words


def test_the_chart_is_an_image_with_a_title_and_a_description_for_screen_readers():
    fragment = render_hit_chart(days((100, 80), (50, 50), (0, 0), (200, 0), (10, 5), (100, 100), (1, 1)))
    svg = svg_of(fragment)
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "hit-chart-title hit-chart-desc"
    assert svg.find(f"{SVG}title").text == "Downloads served locally, per day, last 7 days"  # type: ignore[union-attr]
    desc = svg.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc is not None and desc.startswith("461 downloads from Mon 11-30 to Sun 12-06 (UTC), 236 of them")
    assert "<script" not in fragment and " on" not in fragment.replace(" one", "")  # no script, no handlers
    titles = ["".join(g.find(f"{SVG}title").itertext()) for g in svg.iter(f"{SVG}g")]  # type: ignore[union-attr]
    assert titles[0] == "Mon 11-30: 80 of 100 downloads served locally (80.0 %)"


def test_the_table_holds_every_figure_of_the_chart():
    fragment = render_hit_chart(days((1000, 998), (0, 0)))
    assert '<table id="hit-days">' in fragment
    assert "<tr><td>Mon 11-30</td><td>1,000</td><td>998</td><td>99.8 %</td><td>99.8 %</td></tr>" in fragment
    assert "<tr><td>Tue 12-01</td><td>0</td><td>0</td><td>–</td><td>–</td></tr>" in fragment


def test_days_without_any_download_draw_an_empty_chart():
    svg = svg_of(render_hit_chart(days(*[(0, 0)] * 7)))
    assert bars(svg) == [[]] * 7
