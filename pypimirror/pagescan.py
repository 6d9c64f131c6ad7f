"""Every file the stored project pages list, in one pass over the repository.

Replaying or generating a trace needs, for every file the mirror could serve, its size,
project, version and upload time, all of which the stored ``index.v1_json`` pages carry. This
module reads them all at once (:func:`scan_listed_files`), or the pages of a few projects
(:func:`read_projects_listed_files`, the cache job's release prefetch). It blocks on the disk:
call it from a worker thread in async code.
"""

from __future__ import annotations

__all__ = ["ListedFile", "read_projects_listed_files", "scan_listed_files"]

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from packaging.utils import NormalizedName

from pypimirror.errors import MalformedUpstreamError
from pypimirror.listedfiles import files_on_this_mirror
from pypimirror.pagemodel import ProjectPage, parse_simple_project_json
from pypimirror.storage import RepoLayout, is_normalized_project_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A distribution file a stored page lists under this mirror's ``{prefix}/packages/``.

    ``path`` is the decoded package path (``ab/cd/<hash>/<filename>``), the key the access
    log, the votes and the tiers use. ``version`` is None when the page's file name does not
    tell it; ``upload_time`` is POSIX seconds, None when the page gives none; ``yanked`` is
    whether the page marks the file yanked (PEP 592).
    """

    path: str
    size: int
    project: NormalizedName
    version: str | None
    filename: str
    upload_time: float | None
    yanked: bool = False


def scan_listed_files(repo_path: Path, prefix: str) -> dict[str, ListedFile]:
    """The files listed by every stored project page under ``repo_path``, by path; blocking.

    Projects are read in name order, so equal repositories give equal dicts in equal order.
    A page that is missing, unreadable or malformed lists nothing (each is logged, with a
    count at the end); files whose URL points elsewhere than ``{prefix}/packages/`` are not
    served by this mirror and are left out. A path two pages list is kept from the first.
    """
    layout = RepoLayout(repo_path)
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
        _add_page_files(page, prefix, files)
    if unreadable:
        logger.warning("%d stored project pages could not be read; their files are not listed", unreadable)
    logger.info("stored pages under %s list %d files", repo_path, len(files))
    return files


def read_projects_listed_files(
    repo_path: Path, prefix: str, names: Iterable[NormalizedName], *, modified_since: float | None = None
) -> dict[str, ListedFile]:
    """The files listed by the stored pages of ``names``, by path; blocking.

    With ``modified_since`` (POSIX seconds), a page whose file was last written before it is
    not read: it cannot list a file uploaded after that, which is all a caller looking for new
    releases needs. A missing page lists nothing; an unreadable or malformed one is logged.
    """
    layout = RepoLayout(repo_path)
    files: dict[str, ListedFile] = {}
    for name in sorted(set(names)):
        page_path = layout.project_page(name, "index.v1_json")
        try:
            if modified_since is not None and page_path.stat().st_mtime < modified_since:
                continue
            page = parse_simple_project_json(page_path.read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, MalformedUpstreamError) as exc:
            logger.warning("cannot read the stored page of %s: %s", name, exc)
            continue
        _add_page_files(page, prefix, files)
    return files


def _add_page_files(page: ProjectPage, prefix: str, files: dict[str, ListedFile]) -> None:
    """Add the files ``page`` lists under ``{prefix}/packages/`` to ``files`` (a path already there stays)."""
    # A release's files share its version and (often) its upload time: one object each, so a
    # scan of a whole index holds a million files in far less memory.
    versions: dict[str, str] = {}
    times: dict[str, float] = {}
    for path, dist in files_on_this_mirror(page, prefix):
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
            yanked=dist.yanked is not False,
        )


def _project_names(simple_dir: Path) -> list[NormalizedName]:
    """The project directories under ``simple/``, sorted; none when it does not exist yet."""
    try:
        with os.scandir(simple_dir) as entries:
            names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(NormalizedName(name) for name in names if is_normalized_project_name(name))
