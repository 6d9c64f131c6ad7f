"""Which simple-index page variant a request gets (PEP 691 server-driven negotiation).

A pure function of the ``Accept`` header and the optional ``?format=`` parameter, answering a
:class:`PageVariant` or None, which the handler turns into ``406 Not Acceptable``. Parsed
headers are cached, since every index request negotiates and clients repeat the same few headers.
"""

from __future__ import annotations

__all__ = ["PageVariant", "choose_variant"]

import enum
import functools
import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class PageVariant(enum.Enum):
    """One pre-rendered page of a project (or the root); the value is its file name on disk."""

    HTML = "index.html"
    V1_HTML = "index.v1_html"
    V1_JSON = "index.v1_json"

    @property
    def content_type(self) -> str:
        """The exact ``Content-Type`` to send; ``latest`` requests get the ``v1`` type, as PEP 691 says."""
        return _CONTENT_TYPES[self]


_CONTENT_TYPES = {
    PageVariant.HTML: "text/html; charset=utf-8",
    PageVariant.V1_HTML: "application/vnd.pypi.simple.v1+html",
    PageVariant.V1_JSON: "application/vnd.pypi.simple.v1+json",
}

#: Media types naming one variant exactly, in any letter case once lowered.
_EXPLICIT = {
    "text/html": PageVariant.HTML,
    "application/vnd.pypi.simple.v1+html": PageVariant.V1_HTML,
    "application/vnd.pypi.simple.latest+html": PageVariant.V1_HTML,
    "application/vnd.pypi.simple.v1+json": PageVariant.V1_JSON,
    "application/vnd.pypi.simple.latest+json": PageVariant.V1_JSON,
}

#: The top-level type of each variant, for ``text/*`` and ``application/*`` ranges.
_TOP_TYPE = {
    PageVariant.HTML: "text",
    PageVariant.V1_HTML: "application",
    PageVariant.V1_JSON: "application",
}

# How specifically a range names a variant; more specific ranges override less specific ones
# (RFC 9110 §12.5.1) and win ties on q.
_ANY, _TYPE_WILDCARD, _EXACT = 0, 1, 2

# Tie-break among variants of equal q and specificity. Named types (or a type wildcard such as
# ``application/*``) prefer the most expressive format; a bare ``*/*`` (browsers, curl, a missing
# header) gets HTML, which is what a person looking at the page wants.
_PREFERENCE = {
    _EXACT: (PageVariant.V1_JSON, PageVariant.V1_HTML, PageVariant.HTML),
    _TYPE_WILDCARD: (PageVariant.V1_JSON, PageVariant.V1_HTML, PageVariant.HTML),
    _ANY: (PageVariant.HTML, PageVariant.V1_JSON, PageVariant.V1_HTML),
}

_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_RANGE_RE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")

# Headers longer than this are negotiated without caching, so a client cannot fill the cache
# with huge keys; real clients send well under 200 characters.
_CACHEABLE_LENGTH = 512


@dataclass(frozen=True, slots=True)
class _Range:
    """One parsed media range of an Accept header."""

    type: str
    subtype: str
    q: float


def choose_variant(accept: str | None, format_param: str | None = None) -> PageVariant | None:
    """The variant to serve, or None when the client accepts none of them (answer 406).

    ``format_param`` (the ``?format=`` query value) overrides ``Accept`` and must be exactly one
    of the five simple-index content types (a ``+`` decoded to a space by the query parser is
    put back); anything else, even empty, gives None. Without it the ``Accept`` header decides:

    * each variant takes the q of the most specific range matching it, and the highest q wins;
      q=0 means "not acceptable";
    * ties go to the more specific match (a named type beats ``application/*``, which beats
      ``*/*``), then to JSON over v1 HTML over ``text/html`` — except under a bare ``*/*``, where
      HTML wins, so browsers and curl get HTML;
    * a missing or empty header is ``*/*``. A range that does not parse (no ``type/subtype``,
      a q outside 0..1 or with more than 3 decimals) is ignored; if no range parses at all the
      header counts as missing.
    """
    if format_param is not None:
        return _variant_for_format(format_param)
    if accept is None:
        return PageVariant.HTML
    if len(accept) > _CACHEABLE_LENGTH:
        return _variant_for_accept(accept)
    return _cached_variant_for_accept(accept)


def _variant_for_format(value: str) -> PageVariant | None:
    """The variant named by a ``?format=`` value; lists, wildcards and parameters are refused."""
    return _EXPLICIT.get(value.strip().lower().replace(" ", "+"))


def _variant_for_accept(accept: str) -> PageVariant | None:
    ranges = _parse_accept(accept)
    if not ranges:
        return PageVariant.HTML
    best: tuple[float, int, int] | None = None
    chosen: PageVariant | None = None
    for variant in PageVariant:
        match = _best_match(variant, ranges)
        if match is None or match[0] == 0:
            continue
        q, specificity = match
        rank = (q, specificity, -_PREFERENCE[specificity].index(variant))
        if best is None or rank > best:
            best, chosen = rank, variant
    return chosen


_cached_variant_for_accept = functools.lru_cache(maxsize=128)(_variant_for_accept)


def _best_match(variant: PageVariant, ranges: list[_Range]) -> tuple[float, int] | None:
    """(q, specificity) of the most specific range matching ``variant``.

    Of equally specific ranges (a type named twice) the highest q counts.
    """
    found: tuple[int, float] | None = None
    for media in ranges:
        specificity = _specificity(variant, media)
        if specificity is None:
            continue
        candidate = (specificity, media.q)
        if found is None or candidate > found:
            found = candidate
    return None if found is None else (found[1], found[0])


def _specificity(variant: PageVariant, media: _Range) -> int | None:
    if media.type == "*":
        return _ANY if media.subtype == "*" else None
    if media.subtype == "*":
        return _TYPE_WILDCARD if media.type == _TOP_TYPE[variant] else None
    return _EXACT if _EXPLICIT.get(f"{media.type}/{media.subtype}") is variant else None


def _parse_accept(accept: str) -> list[_Range]:
    """The well-formed media ranges of an Accept header, lower-cased; malformed ones are dropped."""
    ranges = []
    for item in accept.lower().split(","):
        media, *params = item.split(";")
        match = _MEDIA_RANGE_RE.fullmatch(media.strip())
        if match is None:
            continue
        q = _parse_q(params)
        if q is None:
            continue
        media_type, subtype = match.groups()
        if media_type == "*" and subtype != "*":
            continue
        ranges.append(_Range(media_type, subtype, q))
    return ranges


def _parse_q(params: list[str]) -> float | None:
    """The range's q (default 1), or None if its q is malformed; other parameters are ignored."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() != "q":
            continue
        value = value.strip()
        return float(value) if _QVALUE_RE.fullmatch(value) else None
    return 1.0
