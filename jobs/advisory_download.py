"""Fetching an advisory export from a URL, and not again while it is unchanged.

An export zip is tens of megabytes and changes a few times a day, while the advisory sync runs
every hour: so the last one fetched is kept under ``{repo_path}/advisories/`` with the
validators the server gave for it (``ETag``, ``Last-Modified``, ``Content-Length``). A run
first asks for the headers (HEAD); when they name the kept export, the run has nothing to
fetch or read. A server that answers HEAD badly, or without validators, gets a full download
every run, as before. The validators are written only once the export was read and stored
whole (:func:`remember`), so a run that failed half-way is repeated in full by the next.
All requests go through the mirror's upstream client (its proxy, User-Agent and retries).
"""

from __future__ import annotations

__all__ = ["KeptExport", "fetch_export", "remember"]

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pypimirror.errors import UpstreamError
from pypimirror.storage import atomic_write
from pypimirror.upstream import UpstreamClient
from pypimirror.urlmask import mask_url

logger = logging.getLogger(__name__)

_EXPORT = "export.zip"
_VALIDATORS = "export.json"
_VALIDATOR_HEADERS = ("ETag", "Last-Modified", "Content-Length")


@dataclass(frozen=True, slots=True)
class KeptExport:
    """The export on disk, whether it is the one already read, and what names it on the server."""

    path: Path
    unchanged: bool
    validators: dict[str, str]


async def fetch_export(url: str, directory: Path, client: UpstreamClient, stop: asyncio.Event) -> KeptExport:
    """The export at ``url`` in ``directory``: the kept one if the server still has it, else downloaded.

    Raises :class:`~pypimirror.errors.UpstreamError` when the download fails (the kept export,
    if any, stays as it was).
    """
    path = directory / _EXPORT
    validators = await _validators(client, url)
    if validators and validators == await asyncio.to_thread(_kept_validators, directory, path):
        logger.info("advisories: %s is unchanged since it was last read", mask_url(url))
        return KeptExport(path, unchanged=True, validators=validators)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    partial = directory / f".{_EXPORT}.partial"
    await client.download_to(url, partial, cancel=stop)  # removes the partial file on failure
    await asyncio.to_thread(partial.replace, path)
    return KeptExport(path, unchanged=False, validators=validators)


def remember(directory: Path, export: KeptExport) -> None:
    """Record that ``export`` was read and stored whole: the next run may skip it while unchanged.

    Blocking (it fsyncs): call it from a worker thread."""
    if export.validators:
        atomic_write(directory / _VALIDATORS, json.dumps(export.validators, sort_keys=True).encode())


async def _validators(client: UpstreamClient, url: str) -> dict[str, str]:
    """What the server says names the export now; empty when it says nothing usable."""
    try:
        answer = await client.head(url, ok_statuses=(200,))
    except UpstreamError as exc:
        logger.info("advisories: no HEAD answer for %s (%s); downloading it", mask_url(url), exc)
        return {}
    found = {name: answer.headers[name] for name in _VALIDATOR_HEADERS if name in answer.headers}
    return found if "ETag" in found or "Last-Modified" in found else {}


def _kept_validators(directory: Path, export: Path) -> dict[str, str] | None:
    """The validators of the export kept in ``directory`` and read whole; None without one."""
    try:
        kept = json.loads((directory / _VALIDATORS).read_bytes())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) and export.is_file() else None
