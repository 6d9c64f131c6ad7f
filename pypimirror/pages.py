"""Our simple-index pages, rendered as pure functions of a page model: same input, same bytes.

Every page declares API 1.4 (PEP 700's fields, PEP 740's provenance and PEP 792's status). Choices, made once here:

* JSON is written like PyPI's (sorted keys, compact separators, a trailing newline) but
  ASCII-escaped, so any string, even a lone surrogate, gives valid JSON.
* HTML is UTF-8; every name, URL, reason and specifier is HTML-escaped. ``index.html`` and
  ``index.v1_html`` are the same bytes: PEP 629 wants the repository-version meta on every
  simple page, ``text/html`` included, so callers pass ``repository_meta=True`` for both.
* Files keep the page's order, (version, filename) as on PyPI; root pages are ordered by
  normalized name and stream out in chunks, so all of PyPI renders in about a second.
* JSON never carries ``dist-info-metadata`` (it breaks old pip); HTML carries only sha256
  fragments (uv rejects other hash names).

The page model and the parsers live in :mod:`pypimirror.pagemodel` and are re-exported here.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "DistFile",
    "ProjectPage",
    "RootEntry",
    "parse_json_api",
    "parse_simple_project_json",
    "render_project_html",
    "render_project_json",
    "render_root_html",
    "render_root_json",
    "rewrite_file_url",
]

import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from html import escape
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Final
from urllib.parse import quote

from packaging.utils import NormalizedName

from pypimirror.pagemodel import DistFile, ProjectPage, parse_json_api, parse_simple_project_json

logger = logging.getLogger(__name__)

#: The simple API version our pages declare, in JSON ``meta`` and in the HTML meta tag.
API_VERSION: Final = "1.4"

_ROOT_CHUNK: Final = 4096
# A normalized name of a valid project is already safe in a URL path and in HTML.
_IS_PLAIN_NAME: Final = re.compile(r"[a-z0-9-]+").fullmatch

#: One project of the root page: (display name, normalized name, last serial).
RootEntry = tuple[str, NormalizedName, int]


def rewrite_file_url(url: str, *, packages_url: str, prefix: str) -> str:
    """Point a file URL under upstream ``packages_url`` at this mirror's ``{prefix}/packages/``.

    Any other URL (another host, a lookalike path such as ``…/packages-old/``) is left as it is,
    so clients fetch it from where upstream said. Callers bind the keywords with
    :func:`functools.partial` and pass the result as ``url_for``.
    """
    base = packages_url.rstrip("/") + "/"
    if not url.startswith(base):
        return url
    return f"{prefix.rstrip('/')}/packages/{url[len(base):]}"


# --- project pages -------------------------------------------------------------------------


def render_project_json(page: ProjectPage, *, url_for: Callable[[str], str]) -> bytes:
    """The PEP 691 project page (``index.v1_json``), API 1.4, with file URLs through ``url_for``."""
    doc: dict[str, object] = {
        "meta": {"_last-serial": page.last_serial, "api-version": API_VERSION},
        "name": page.name,
        "versions": list(page.versions),
        "files": [_file_json(f, url_for) for f in page.files],
    }
    if page.status is not None:
        doc["project-status"] = _status_json(page.status, page.status_reason)
    return _dump_json(doc)


def _file_json(f: DistFile, url_for: Callable[[str], str]) -> dict[str, object]:
    metadata = _metadata_json(f.core_metadata)
    entry: dict[str, object] = {
        "filename": f.filename,
        "url": url_for(f.url),
        "hashes": {"sha256": f.sha256} if f.sha256 else {},
        "requires-python": f.requires_python,
        "size": f.size,
        "yanked": f.yanked,
        # PEP 714's name and PyPI's harmless misspelling; never "dist-info-metadata".
        "core-metadata": metadata,
        "data-dist-info-metadata": metadata,
        "provenance": f.provenance,
    }
    if f.upload_time is not None:
        entry["upload-time"] = f.upload_time
    return entry


def _metadata_json(core_metadata: bool | str) -> bool | dict[str, str]:
    return {"sha256": core_metadata} if isinstance(core_metadata, str) else core_metadata


def _status_json(status: str, reason: str | None) -> dict[str, str]:
    return {"status": status, "reason": reason} if reason else {"status": status}


def _dump_json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def render_project_html(
    page: ProjectPage, *, url_for: Callable[[str], str], repository_meta: bool
) -> bytes:
    """The PEP 503 project page with PEP 592/658/714/740/792 attributes, as PyPI lays it out.

    ``repository_meta`` adds ``<meta name="pypi:repository-version" content="1.4">``; the
    mirror passes True for both ``index.html`` and ``index.v1_html`` (see the module docstring).
    """
    title = escape(page.display_name)
    lines = ["<!DOCTYPE html>", '<html lang="en">', "  <head>"]
    if repository_meta:
        lines.append(f'    <meta name="pypi:repository-version" content="{API_VERSION}">')
    if page.status is not None:
        lines.append(f'    <meta name="pypi:project-status" content="{escape(page.status)}">')
        if page.status_reason:
            reason = escape(page.status_reason)
            lines.append(f'    <meta name="pypi:project-status-reason" content="{reason}">')
    lines += [f"    <title>Links for {title}</title>", "  </head>", "  <body>"]
    lines.append(f"    <h1>Links for {title}</h1>")
    lines += (_anchor(f, url_for) for f in page.files)
    lines += ["  </body>", "</html>", f"<!--SERIAL {page.last_serial}-->", ""]
    return "\n".join(lines).encode("utf-8", "xmlcharrefreplace")


def _anchor(f: DistFile, url_for: Callable[[str], str]) -> str:
    """One ``<a>``, attributes in PyPI's template order."""
    href = url_for(f.url) + (f"#sha256={f.sha256}" if f.sha256 else "")
    attrs = [f'href="{escape(href)}"']
    if f.requires_python is not None:
        attrs.append(f'data-requires-python="{escape(f.requires_python)}"')
    if f.yanked is not False:
        reason = f.yanked if isinstance(f.yanked, str) else ""
        attrs.append(f'data-yanked="{escape(reason)}"')
    if f.core_metadata is not False:
        value = "true" if f.core_metadata is True else f"sha256={f.core_metadata}"
        attrs.append(f'data-dist-info-metadata="{value}" data-core-metadata="{value}"')
    if f.provenance is not None:
        attrs.append(f'data-provenance="{escape(f.provenance)}"')
    return f'    <a {" ".join(attrs)}>{escape(f.filename)}</a><br />'


# --- root pages ----------------------------------------------------------------------------

_ROOT_HTML_HEAD: Final = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta name="pypi:repository-version" content="{API_VERSION}">
    <title>Simple index</title>
  </head>
  <body>
""".encode("ascii")
_ROOT_HTML_TAIL: Final = b"  </body>\n</html>\n"


def render_root_json(projects: Iterable[RootEntry], *, last_serial: int) -> bytes:
    """The PEP 691 root page with each project's ``_last-serial``, as bandersnatch needs.

    ``name`` is the display name, as on PyPI; entries are ordered by normalized name. The page
    is written piecewise rather than through one big ``json.dumps``: about twice as fast, and
    the only large object built is the output.
    """
    out = io.BytesIO()
    out.write(b'{"meta":{"_last-serial":%d,"api-version":"%s"},"projects":['
              % (last_serial, API_VERSION.encode("ascii")))
    separator = b""
    for chunk in _chunks_by_name(projects):
        out.write(separator)
        text = ",".join(['{"_last-serial":%d,"name":%s}' % (serial, encode_basestring_ascii(display))
                         for display, _, serial in chunk])
        out.write(text.encode("ascii"))
        separator = b","
    out.write(b"]}\n")
    return out.getvalue()


def render_root_html(projects: Iterable[RootEntry], *, prefix: str) -> bytes:
    """The PEP 503 root page: one ``<a href="{prefix}/simple/{normalized}/">{display}</a>``
    per project, ordered by normalized name, written in chunks like the JSON twin."""
    base = escape(f"{prefix.rstrip('/')}/simple/")
    out = io.BytesIO()
    out.write(_ROOT_HTML_HEAD)
    for chunk in _chunks_by_name(projects):
        text = "".join([f'    <a href="{base}{_href_name(name)}/">{escape(display)}</a>\n'
                        for display, name, _ in chunk])
        out.write(text.encode("utf-8", "xmlcharrefreplace"))
    out.write(_ROOT_HTML_TAIL)
    return out.getvalue()


def _href_name(name: NormalizedName) -> str:
    """The name as one URL path segment (safe in HTML too); a no-op for valid project names."""
    return name if _IS_PLAIN_NAME(name) else quote(name, safe="")


def _chunks_by_name(projects: Iterable[RootEntry]) -> Iterator[Sequence[RootEntry]]:
    """Projects by normalized name, in slices; each slice becomes text, then bytes in a
    BytesIO, whose getvalue() hands over its buffer uncopied: peak memory is about the
    output plus one slice."""
    ordered = sorted(projects, key=itemgetter(1))
    for start in range(0, len(ordered), _ROOT_CHUNK):
        yield ordered[start : start + _ROOT_CHUNK]
