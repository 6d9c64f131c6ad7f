"""Every file the stored project pages list, in one pass over the repository.

Replaying or generating a trace needs, for every file the mirror could serve, its size,
project, version and upload time, all of which the stored ``index.v1_json`` pages carry. This
module reads them all at once (the cache job, by contrast, looks up a few projects per run).
It blocks on the disk: call it from a worker thread in async code.
"""

from __future__ import annotations

__all__ = ["ListedFile", "parse_upload_time", "scan_listed_files"]

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
        for dist in page.files:
            if not dist.url.startswith(base):
                continue
            try:
                path = parse_package_path(dist.url[len(base) :]).relpath
            except UnsafePathError:
                continue
            if path not in files:
                files[path] = ListedFile(
                    path=path,
                    size=dist.size,
                    project=page.name,
                    version=dist.version,
                    filename=dist.filename,
                    upload_time=parse_upload_time(dist.upload_time),
                )
    if unreadable:
        logger.warning("%d stored project pages could not be read; their files are not listed", unreadable)
    logger.info("stored pages under %s list %d files", repo_path, len(files))
    return files


def parse_upload_time(text: str | None) -> float | None:
    """A page's ``upload-time`` (RFC 3339 in UTC, as the page model checked it) as POSIX seconds."""
    if text is None:
        return None
    return datetime.fromisoformat(text).timestamp()


def _project_names(simple_dir: Path) -> list[NormalizedName]:
    """The project directories under ``simple/``, sorted; none when it does not exist yet."""
    try:
        with os.scandir(simple_dir) as entries:
            names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(NormalizedName(name) for name in names if is_normalized_project_name(name))
