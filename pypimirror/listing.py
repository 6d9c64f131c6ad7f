"""The upstream's list of every project with its last serial, read and checked.

The index sync removes whatever is missing from this list, so a listing is only returned
when the answer is clearly a whole listing: an answer that is not the expected document, a
fault, or an empty list raises :class:`~pypimirror.errors.MalformedUpstreamError`, so a
broken upstream can never look like "every project was removed". Single entries without a
valid name or an integer serial are skipped with a warning, as bandersnatch does.
"""

from __future__ import annotations

__all__ = [
    "SIMPLE_JSON_TYPE",
    "ListedProject",
    "Listing",
    "ListingMode",
    "fetch_listing",
    "parse_simple_root_listing",
    "parse_xmlrpc_listing",
]

import asyncio
import json
import logging
import re
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeGuard, assert_never
from xml.parsers.expat import ExpatError

from packaging.utils import InvalidName, NormalizedName, canonicalize_name

from pypimirror.errors import MalformedUpstreamError
from pypimirror.upstream import UpstreamClient, UpstreamResponse

logger = logging.getLogger(__name__)

SIMPLE_JSON_TYPE = "application/vnd.pypi.simple.v1+json"

#: How the listing is read (``upstream.listing``): the PEP 691 root page, or XML-RPC.
ListingMode = Literal["simple-json", "xmlrpc"]

_SKIPPED_EXAMPLES = 5
_ENTRY_KEYS: Final = frozenset({"name", "_last-serial"})
#: A name that :func:`canonicalize_name` would validate and return unchanged.
_IS_NORMALIZED: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*").fullmatch


@dataclass(frozen=True, slots=True)
class ListedProject:
    """One project as the upstream lists it: the name it displays and its last serial."""

    display_name: str
    serial: int


#: Every listed project, keyed by normalized name.
Listing = dict[NormalizedName, ListedProject]


async def fetch_listing(client: UpstreamClient, pypi_url: str, mode: ListingMode) -> Listing:
    """Ask the upstream at ``pypi_url`` for its listing in the configured ``mode``.

    The answer is parsed in a worker thread: for all of PyPI that takes seconds, which the
    event loop spends serving instead.
    """
    base = pypi_url.rstrip("/")
    if mode == "simple-json":
        url = f"{base}/simple/"
        response = await client.get(url, headers={"Accept": SIMPLE_JSON_TYPE})
        _require_simple_json(response)
        listing = await asyncio.to_thread(parse_simple_root_listing, response.body, url=response.url)
    elif mode == "xmlrpc":
        url = f"{base}/pypi"
        call = xmlrpc.client.dumps((), "list_packages_with_serial").encode()
        response = await client.post(url, call, content_type="text/xml")
        listing = await asyncio.to_thread(parse_xmlrpc_listing, response.body, url=response.url)
    else:
        assert_never(mode)
    logger.info("upstream lists %d projects (%s)", len(listing), mode)
    return listing


def parse_simple_root_listing(body: bytes, *, url: str = "") -> Listing:
    """Read a PEP 691 JSON root page whose entries carry PyPI's ``_last-serial``.

    ``url`` only names the source in errors.
    """
    try:
        document = _decode_root(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedUpstreamError(f"upstream listing is not JSON: {exc}", url) from exc
    if not isinstance(document, dict):
        raise MalformedUpstreamError("upstream listing is not a JSON object", url)
    _check_api_version(document.get("meta"), url)
    projects = document.get("projects")
    if not isinstance(projects, list):
        raise MalformedUpstreamError("upstream listing has no 'projects' list", url)
    entries = (
        entry if isinstance(entry, ListedProject)
        else (entry.get("name"), entry.get("_last-serial")) if isinstance(entry, dict)
        else (entry, None)
        for entry in projects
    )
    return _collect(entries, len(projects), url)


def _decode_root(body: bytes) -> object:
    """``json.loads(body)``, except that the plain entries of "projects" arrive as ListedProjects.

    PyPI lists ~800k projects: as dicts they would take ~4 times the memory, all at once, and
    the listing keeps these very objects. Only objects holding a string "name", a serial and
    nothing else are turned. Should one sit anywhere but directly in "projects" (as "meta",
    inside an entry, or as the document itself), the body is decoded again the plain way, so
    what the caller reads is always what plain JSON decoding gives.
    """
    hook = _EntryHook()
    try:
        document = json.loads(body, object_hook=hook)
    except RecursionError:  # the hook's frame may have been the one too many: decide plainly
        return json.loads(body)
    projects = document.get("projects") if isinstance(document, dict) else None
    direct = sum(isinstance(e, ListedProject) for e in projects) if isinstance(projects, list) else 0
    return document if direct == hook.made else json.loads(body)


class _EntryHook:
    """The ``object_hook`` of :func:`_decode_root`; counts the projects it made."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self, obj: dict[str, object]) -> object:
        if obj.keys() <= _ENTRY_KEYS:
            name, serial = obj.get("name"), obj.get("_last-serial")
            if isinstance(name, str) and _is_serial(serial):
                self.made += 1
                return ListedProject(name, serial)
        return obj


def parse_xmlrpc_listing(body: bytes, *, url: str = "") -> Listing:
    """Read the answer to XML-RPC ``list_packages_with_serial`` (a struct of name -> int).

    The parser is expat, which (2.4 and later) refuses entity-expansion bombs.
    """
    try:
        params, method = xmlrpc.client.loads(body)
    except xmlrpc.client.Fault as fault:
        raise MalformedUpstreamError(
            f"upstream XML-RPC fault {fault.faultCode}: {fault.faultString}", url
        ) from fault
    except (ExpatError, xmlrpc.client.Error, ValueError, TypeError) as exc:
        reason = " ".join(map(str, exc.args)) or "no methodResponse found"
        raise MalformedUpstreamError(
            f"upstream XML-RPC answer does not parse: {type(exc).__name__}: {reason}", url
        ) from exc
    if method is not None or len(params) != 1 or not isinstance(params[0], dict):
        raise MalformedUpstreamError("upstream XML-RPC answer is not one struct", url)
    return _collect(params[0].items(), len(params[0]), url)


def _require_simple_json(response: UpstreamResponse) -> None:
    content_type = response.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() != SIMPLE_JSON_TYPE:
        raise MalformedUpstreamError(
            f"upstream did not answer PEP 691 JSON (Content-Type: {content_type or 'missing'})",
            response.url,
        )


def _check_api_version(meta: object, url: str) -> None:
    """A newer major API version may mean anything (PEP 629): refuse it. Absent is fine."""
    if not isinstance(meta, dict) or "api-version" not in meta:
        return
    version = meta["api-version"]
    if not isinstance(version, str) or version.split(".", 1)[0] != "1":
        raise MalformedUpstreamError(
            f"upstream listing has api-version {version!r}; only version 1.x is understood", url
        )


def _collect(
    entries: Iterable[ListedProject | tuple[object, object]], total: int, url: str
) -> Listing:
    """Build the listing from (name, serial) pairs, or projects already made of them (kept as
    they are, to share their memory); duplicates keep the higher serial."""
    if total == 0:
        raise MalformedUpstreamError(
            "upstream listing is empty; refusing to treat that as 'every project was removed'",
            url,
        )
    listing: Listing = {}
    skipped: list[object] = []
    for entry in entries:
        name, serial = (entry.display_name, entry.serial) if isinstance(entry, ListedProject) else entry
        if isinstance(name, str) and _is_serial(serial) and (normalized := _normalize(name)):
            known = listing.get(normalized)
            if known is None or serial > known.serial:
                listing[normalized] = entry if isinstance(entry, ListedProject) else ListedProject(name, serial)
        else:
            skipped.append(name)
    if not listing:
        raise MalformedUpstreamError(
            f"none of the {total} listed projects has a valid name and an integer serial", url
        )
    if skipped:
        logger.warning(
            "skipped %d of %d listed projects without a valid name and integer serial, e.g. %s",
            len(skipped),
            total,
            ", ".join(repr(name) for name in skipped[:_SKIPPED_EXAMPLES]),
        )
    return listing


def _normalize(name: str) -> NormalizedName | None:
    """The normalized name, or None for a string that could not be a project's name.

    An already normalized name (as most listed names are) is returned as the same object,
    which saves a copy of the string per project.
    """
    if _IS_NORMALIZED(name):
        return NormalizedName(name)
    try:
        return canonicalize_name(name, validate=True)
    except InvalidName:
        return None


def _is_serial(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
