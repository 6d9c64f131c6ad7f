"""A subset of the OSV API answered from the stored advisories, for auditing without other network.

Three calls, in the shapes OSV's own service uses, so that OSV clients (``pip-audit -s osv
--osv-url ...``) work against the mirror unchanged:

* ``query``: one package (``{"package": {"name", "ecosystem"}, "version"}``, or a ``purl``
  ``pkg:pypi/<name>@<version>``) -> ``{"vulns": [<full records>]}``, or ``{}`` for none.
  Without a version, every record naming the package.
* ``querybatch``: ``{"queries": [...]}`` -> ``{"results": [{"vulns": [{"id", "modified"}]}, ...]}``,
  one result per query in order (``{}`` for none); clients fetch the records with ``vulns/{id}``.
* ``vulns/{id}``: the record, withdrawn ones included (OSV shows them too).

Only the PyPI ecosystem is stored: a query for another ecosystem finds nothing, as it would for
a package without advisories. Withdrawn records never match a query. Bad requests (not JSON, a
``commit`` query, a version given twice) raise :class:`OsvRequestError` with OSV's message style.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH", "AdvisoryLookup", "OsvQuery", "OsvRequestError", "dump", "parse_batch", "parse_query"]

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from packaging.utils import NormalizedName, canonicalize_name
from sqlalchemy import Connection

from pypimirror import advisoryqueries as aq
from pypimirror.db import Database
from pypimirror.osv import ECOSYSTEM

#: Queries per batch, as OSV's service allows.
MAX_BATCH = 1000


class OsvRequestError(ValueError):
    """A request the API cannot answer; its text goes back to the client (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class OsvQuery:
    """One package query; ``name`` None asks about another ecosystem (nothing is stored for it)."""

    name: NormalizedName | None
    version: str | None


def parse_query(data: object) -> OsvQuery:
    """A query object of the request body, checked."""
    if not isinstance(data, Mapping):
        raise OsvRequestError("a query is a JSON object")
    if "commit" in data:
        raise OsvRequestError("commit queries are not supported: only PyPI packages are stored")
    version = data.get("version")
    if version is not None and (not isinstance(version, str) or not version.strip()):
        raise OsvRequestError("version must be a non-empty string")
    package = data.get("package")
    if not isinstance(package, Mapping):
        raise OsvRequestError("a query needs a package: {name, ecosystem} or {purl}")
    purl = package.get("purl")
    if purl is not None:
        if "name" in package or "ecosystem" in package:
            raise OsvRequestError("give a package as a purl or as name and ecosystem, not both")
        name, purl_version = _parse_purl(purl)
        if purl_version is not None and version is not None:
            raise OsvRequestError("the version is given twice: in the purl and as version")
        return OsvQuery(name, purl_version or version)
    name, ecosystem = package.get("name"), package.get("ecosystem")
    if not isinstance(name, str) or not name.strip():
        raise OsvRequestError("package.name must be a non-empty string")
    if not isinstance(ecosystem, str):
        raise OsvRequestError("package.ecosystem must be given with package.name")
    return OsvQuery(canonicalize_name(name) if ecosystem == ECOSYSTEM else None, version)


def _parse_purl(purl: object) -> tuple[NormalizedName | None, str | None]:
    """The project and version of ``pkg:pypi/<name>[@<version>]`` (qualifiers and subpath ignored)."""
    if not isinstance(purl, str) or not purl.startswith("pkg:") or "/" not in purl:
        raise OsvRequestError(f"{purl!r} is not a package URL (pkg:type/name@version)")
    body = purl[4:].split("#", 1)[0].split("?", 1)[0]
    purl_type, _, rest = body.partition("/")
    if purl_type.lower() != "pypi":
        return None, None
    name, _, version = rest.partition("@")
    if not name or "/" in name:
        raise OsvRequestError(f"{purl!r} has no PyPI project name")
    return canonicalize_name(unquote(name)), unquote(version) or None


def parse_batch(data: object) -> list[OsvQuery]:
    """The queries of a ``querybatch`` body, at most :data:`MAX_BATCH`."""
    queries = data.get("queries") if isinstance(data, Mapping) else None
    if not isinstance(queries, list):
        raise OsvRequestError("a batch is {\"queries\": [...]}")
    if len(queries) > MAX_BATCH:
        raise OsvRequestError(f"too many queries: {len(queries)} (at most {MAX_BATCH})")
    return [parse_query(query) for query in queries]


class AdvisoryLookup:
    """Answers the API's calls from the database, each in one read transaction off the IOLoop."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def query(self, query: OsvQuery) -> dict[str, Any]:
        """The ``query`` answer: the full records that apply."""

        def read(conn: Connection) -> dict[str, Any]:
            ids = [item.id for item in _matching(conn, query)]
            return {"vulns": aq.advisory_records(conn, ids)} if ids else {}

        return await self._db.run_read(read)

    async def query_batch(self, queries: Sequence[OsvQuery]) -> dict[str, Any]:
        """The ``querybatch`` answer: per query, the IDs and ``modified`` times that apply."""

        def read(conn: Connection) -> dict[str, Any]:
            results = []
            for query in queries:
                vulns = [{"id": item.id, "modified": _rfc3339(item.modified)} for item in _matching(conn, query)]
                results.append({"vulns": vulns} if vulns else {})
            return {"results": results}

        return await self._db.run_read(read)

    async def record(self, advisory_id: str) -> Mapping[str, Any] | None:
        """The ``vulns/{id}`` answer, or None when no record has that ID."""
        return await self._db.run_read(lambda conn: aq.advisory_record(conn, advisory_id))


def _matching(conn: Connection, query: OsvQuery) -> list[aq.ApplicableAdvisory]:
    if query.name is None:
        return []
    found = aq.applicable_advisories(conn, query.name)
    if query.version is None:
        return found
    return [item for item in found if item.package.affects(query.version)]


def _rfc3339(stored: str) -> str:
    """A stored time (``...T12:00:00.000000Z``) as OSV writes it: without a zero fraction."""
    return stored.replace(".000000Z", "Z")


def dump(answer: Mapping[str, Any]) -> bytes:
    """An answer as the response body."""
    return json.dumps(answer, separators=(",", ":")).encode()
