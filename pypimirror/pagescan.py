"""Every file the stored project pages list, in one pass over the repository.

Replaying or generating a trace needs, for every file the mirror could serve, its size,
project, version and upload time, all of which the stored ``index.v1_json`` pages carry. This
module reads them all at once (the cache job, by contrast, looks up a few projects per run).
It blocks on the disk: call it from a worker thread in async code.
"""

from __future__ import annotations

__all__ = ["ListedFile", "scan_listed_files"]

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from packaging.utils import NormalizedName

from pypimirror.errors import MalformedUpstreamError, UnsafePathError
from pypimirror.pagemodel import parse_simple_project_json
from pypimirror.pkgpath import parse_package_path
from pypimirror.storage import RepoLayout, is_normalized_project_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A distribution file a stored page lists under this mirror's ``{prefix}/packages/``.

    ``path`` is the decoded package path (``ab/cd/<hash>/<filename>``), the key the access
    log, the votes and the tiers use. ``version`` is None when the page's file name does not
    tell it; ``upload_time`` is POSIX seconds, None when the page gives none.
    """

    path: str
    size: int
    project: NormalizedName
    version: str | None
    filename: str
    upload_time: float | None


def scan_listed_files(repo_path: Path, prefix: str) -> dict[str, ListedFile]:
    """The files listed by every stored project page under ``repo_path``, by path; blocking.

    Projects are read in name order, so equal repositories give equal dicts in equal order.
    A page that is missing, unreadable or malformed lists nothing (each is logged, with a
    count at the end); files whose URL points elsewhere than ``{prefix}/packages/`` are not
    served by this mirror and are left out. A path two pages list is kept from the first.
    """
    layout = RepoLayout(repo_path)
    base = prefix.rstrip("/") + "/packages/"
    files: dict[str, ListedFile] = {}
    unreadable = 0
    for name in _project_names(layout.simple_dir):
        page_path = layout.project_page(name, "index.v1_json")
        try:
            page = parse_simple_project_json(page_path.read_bytes())
        except FileNotFoundError:
            continue  # a project directory without its JSON page: nothing listed
        except (OSError, MalformedUpstreamError) as exc:
            unreadable += 1
            logger.warning("cannot read the stored page of %s: %s", name, exc)
            continue
        # A release's files share its version and (often) its upload time: one object each, so a
        # scan of a whole index holds a million files in far less memory.
        versions: dict[str, str] = {}
        times: dict[str, float] = {}
        for dist in page.files:
            if not dist.url.startswith(base):
                continue
            try:
                path = parse_package_path(dist.url[len(base) :]).relpath
            except UnsafePathError:
                continue
            if path in files:
                continue
            version = None if dist.version is None else versions.setdefault(dist.version, dist.version)
            uploaded = None
            if dist.upload_time is not None:
                uploaded = times.get(dist.upload_time)
                if uploaded is None:
                    # RFC 3339 in UTC, as the page model checked it.
                    uploaded = times[dist.upload_time] = datetime.fromisoformat(dist.upload_time).timestamp()
            files[path] = ListedFile(
                path=path,
                size=dist.size,
                project=page.name,
                version=version,
                filename=dist.filename,
                upload_time=uploaded,
            )
    if unreadable:
        logger.warning("%d stored project pages could not be read; their files are not listed", unreadable)
    logger.info("stored pages under %s list %d files", repo_path, len(files))
    return files


def _project_names(simple_dir: Path) -> list[NormalizedName]:
    """The project directories under ``simple/``, sorted; none when it does not exist yet."""
    try:
        with os.scandir(simple_dir) as entries:
            names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(NormalizedName(name) for name in names if is_normalized_project_name(name))
