"""Content negotiation for simple-index pages: Accept with q-values, wildcards, ?format=, 406."""

from __future__ import annotations

import pytest

from pypimirror.negotiation import PageVariant, choose_variant

HTML, V1_HTML, V1_JSON = PageVariant.HTML, PageVariant.V1_HTML, PageVariant.V1_JSON
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
PIP_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, text/html;q=0.01"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

ACCEPT_CASES = [
    # what real clients send
    (PIP_ACCEPT, V1_JSON),
    (UV_ACCEPT, V1_JSON),
    (BROWSER_ACCEPT, HTML),
    ("*/*", HTML),  # curl
    (None, HTML),
    ("", HTML),
    ("  ,  ", HTML),
    # single types
    (JSON_TYPE, V1_JSON),
    (HTML_TYPE, V1_HTML),
    ("text/html", HTML),
    ("application/vnd.pypi.simple.latest+json", V1_JSON),
    ("application/vnd.pypi.simple.latest+html", V1_HTML),
    ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", V1_JSON),
    # q-values decide; ties go to the more expressive explicit type
    ("text/html, application/vnd.pypi.simple.v1+json", V1_JSON),
    (f"text/html, {HTML_TYPE}", V1_HTML),
    (f"{JSON_TYPE};q=0.5, text/html", HTML),
    (f"{JSON_TYPE};q=0.5, {HTML_TYPE};q=0.501", V1_HTML),
    (f"{JSON_TYPE} ; Q=0.9 , text/html;q=0.8", V1_JSON),
    (f"{JSON_TYPE};charset=utf-8;q=1.000", V1_JSON),
    (f"{JSON_TYPE};q=0.1, {JSON_TYPE};q=0.9, text/html;q=0.5", V1_JSON),
    # q=0 means "not acceptable"
    (f"{JSON_TYPE};q=0", None),
    (f"{JSON_TYPE};q=0.000", None),
    (f"{JSON_TYPE};q=0, text/html", HTML),
    ("*/*, text/html;q=0", V1_JSON),
    (f"*/*;q=0, {HTML_TYPE}", V1_HTML),
    # wildcards: explicit beats wildcard on ties, */* alone gives HTML
    ("application/*", V1_JSON),
    ("text/*", HTML),
    ("text/*, application/*", V1_JSON),
    (f"*/*, {HTML_TYPE}", V1_HTML),
    ("*/*, text/html", HTML),
    ("*/*, application/*", V1_JSON),
    (f"*/*, {JSON_TYPE};q=0.5", HTML),
    ("*/*;q=0.8, text/*;q=0.1", V1_JSON),
    (f"application/*;q=0.2, {HTML_TYPE}", V1_HTML),
    # nothing we have is acceptable
    ("text/plain", None),
    ("application/json", None),
    ("application/vnd.pypi.simple.v2+json", None),
    ("text/*;q=0, application/*;q=0", None),
    # malformed ranges are ignored; a header with nothing usable counts as missing
    (f"{JSON_TYPE};q=2, text/html", HTML),
    (f"{JSON_TYPE};q=0.1234, text/html;q=0.5", HTML),
    (f"{JSON_TYPE};q=abc", HTML),
    ("garbage, , ;;;", HTML),
    ("*/json, text/plain", None),
]


@pytest.mark.parametrize(("accept", "expected"), ACCEPT_CASES)
def test_choose_variant_from_accept_header(accept: str | None, expected: PageVariant | None) -> None:
    assert choose_variant(accept) is expected


FORMAT_CASES = [
    (JSON_TYPE, BROWSER_ACCEPT, V1_JSON),
    (HTML_TYPE, PIP_ACCEPT, V1_HTML),
    ("text/html", PIP_ACCEPT, HTML),
    ("application/vnd.pypi.simple.latest+json", None, V1_JSON),
    ("application/vnd.pypi.simple.latest+html", None, V1_HTML),
    # an unencoded "+" in a query string arrives as a space
    ("application/vnd.pypi.simple.v1 json", "text/html", V1_JSON),
    (" Application/Vnd.Pypi.Simple.V1+Json ", None, V1_JSON),
    # one exact content type only: anything else is 406 even if Accept would match
    ("application/json", PIP_ACCEPT, None),
    ("*/*", PIP_ACCEPT, None),
    ("application/*", None, None),
    (f"{JSON_TYPE};q=1", None, None),
    (f"{JSON_TYPE}, text/html", None, None),
    ("", PIP_ACCEPT, None),
]


@pytest.mark.parametrize(("format_param", "accept", "expected"), FORMAT_CASES)
def test_format_parameter_overrides_accept(
    format_param: str, accept: str | None, expected: PageVariant | None
) -> None:
    assert choose_variant(accept, format_param) is expected


@pytest.mark.parametrize(
    ("variant", "content_type", "filename"),
    [
        (HTML, "text/html; charset=utf-8", "index.html"),
        (V1_HTML, HTML_TYPE, "index.v1_html"),
        (V1_JSON, JSON_TYPE, "index.v1_json"),
    ],
)
def test_variant_names_its_file_and_exact_content_type(
    variant: PageVariant, content_type: str, filename: str
) -> None:
    assert variant.content_type == content_type
    assert variant.value == filename


def test_latest_request_is_answered_with_the_v1_content_type() -> None:
    variant = choose_variant("application/vnd.pypi.simple.latest+json")
    assert variant is not None
    assert variant.content_type == JSON_TYPE


def test_huge_hostile_header_is_negotiated_without_error() -> None:
    accept = ", ".join(["text/plain;q=0.5"] * 5000 + [f"{JSON_TYPE};q=0.3", "x" * 10000])
    assert choose_variant(accept) is V1_JSON
    assert choose_variant(accept) is V1_JSON  # uncached path answers the same twice

