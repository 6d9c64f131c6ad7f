"""The serve benchmark's repository: what ``sync --once`` and the cache job would have left.

One realistic project page (about 6 KB of PEP 691 JSON, rendered by :mod:`pypimirror.pages`
exactly as the index sync writes it, with its serial in the database and root pages beside
it), a 2 MiB and a 50 MiB random wheel at PyPI-style paths in the single cache tier, and a
configuration whose upstream (127.0.0.1:9, the discard port) is never contacted: the
scheduled jobs do not run at start and their next run is a week away.
"""

from __future__ import annotations

__all__ = ["Fixture", "build_fixture"]

import gzip
import hashlib
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from packaging.utils import NormalizedName, canonicalize_name

from pypimirror.db import Database
from pypimirror.queries import store_serials
from pypimirror.pages import (
    DistFile,
    ProjectPage,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
    rewrite_file_url,
)
from pypimirror.storage import PAGE_FILES, RepoLayout, atomic_write

logger = logging.getLogger(__name__)

PREFIX = "/pypi"
UPSTREAM = "http://127.0.0.1:9"  # discard port: nothing listens, nothing is ever sent
PACKAGES_URL = f"{UPSTREAM}/packages"
PAGE_TYPE = "application/vnd.pypi.simple.v1+json"
_PROJECT = "examplepkg"
_SERIAL = 31_337_000
_VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.2.1", "2.0.0", "2.1.0")
_FILE_SIZES = {"small": 2 * 2**20, "large": 50 * 2**20}


@dataclass(frozen=True, slots=True)
class Fixture:
    """Where everything is, as URL paths under the mirror's prefix and as files on disk."""

    repo: Path
    config: Path
    database: Path
    tier: Path
    page_url: str
    page_file: str  # relative to repo
    page_bytes: bytes
    file_urls: dict[str, str]  # "small"/"large" -> URL path
    file_paths: dict[str, Path]
    file_sha256: dict[str, str]
    miss_url: str
    miss_location: str
    packages_url: str


def build_fixture(root: Path, *, port: int, workers: int) -> Fixture:
    """Write the repository, the database and the configuration under ``root``."""
    repo = root / "repo"
    tier = repo / "packages"
    database = repo / "bench.db"
    page_bytes, page_file = _write_pages(repo)
    _store_serial(database)
    file_urls: dict[str, str] = {}
    file_paths: dict[str, Path] = {}
    file_sha256: dict[str, str] = {}
    for label, size in _FILE_SIZES.items():
        data = os.urandom(size)
        relpath = _package_relpath(data, f"bench{label}-1.0-py3-none-any.whl")
        file_paths[label] = tier / relpath
        file_paths[label].parent.mkdir(parents=True)
        file_paths[label].write_bytes(data)
        file_urls[label] = f"{PREFIX}/packages/{relpath}"
        file_sha256[label] = hashlib.sha256(data).hexdigest()
    miss_relpath = _package_relpath(b"never cached", "benchmiss-1.0-py3-none-any.whl")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(_config_doc(repo, database, port, workers), sort_keys=False))
    return Fixture(
        repo=repo,
        config=config,
        database=database,
        tier=tier,
        page_url=f"{PREFIX}/simple/{_PROJECT}/",
        page_file=page_file,
        page_bytes=page_bytes,
        file_urls=file_urls,
        file_paths=file_paths,
        file_sha256=file_sha256,
        miss_url=f"{PREFIX}/packages/{miss_relpath}",
        miss_location=f"{PACKAGES_URL}/{miss_relpath}",
        packages_url=f"{PREFIX}/packages",
    )


def _package_relpath(data: bytes, filename: str) -> str:
    """PyPI's layout: the blake2b-256 hex digest split as ab/cd/<60 hex>."""
    digest = hashlib.blake2b(data, digest_size=32).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}"


def _example_page() -> ProjectPage:
    """Six releases, an sdist and a wheel each, with the fields PyPI fills in."""
    files = []
    for number, version in enumerate(_VERSIONS):
        for filename in (f"{_PROJECT}-{version}.tar.gz", f"{_PROJECT}-{version}-py3-none-any.whl"):
            digest = hashlib.sha256(filename.encode()).hexdigest()
            files.append(
                DistFile(
                    filename=filename,
                    url=f"{PACKAGES_URL}/{_package_relpath(filename.encode(), filename)}",
                    sha256=digest,
                    requires_python=">=3.9",
                    size=48_000 + 1_000 * number,
                    upload_time=f"2025-0{1 + number}-15T12:00:00.000000Z",
                    yanked="broken metadata" if version == "1.2.0" else False,
                    core_metadata=filename.endswith(".whl") and hashlib.sha256(digest.encode()).hexdigest(),
                    provenance=None,
                    version=version,
                )
            )
    return ProjectPage(
        name=NormalizedName(_PROJECT),
        display_name="ExamplePkg",
        last_serial=_SERIAL,
        files=tuple(files),
        versions=_VERSIONS,
    )


def _write_pages(repo: Path) -> tuple[bytes, str]:
    """The project's three page variants and the root pages, as the index sync writes them."""
    layout = RepoLayout(repo)
    page = _example_page()
    url_for = partial(rewrite_file_url, packages_url=PACKAGES_URL, prefix=PREFIX)
    html = render_project_html(page, url_for=url_for, repository_meta=True)
    variants = {
        "index.html": html,
        "index.v1_html": html,
        "index.v1_json": render_project_json(page, url_for=url_for),
    }
    assert set(variants) == set(PAGE_FILES)
    layout.project_dir(page.name).mkdir(parents=True)
    for variant, data in variants.items():
        atomic_write(layout.project_page(page.name, variant), data)
    projects = [(page.display_name, page.name, page.last_serial)]
    root_html = render_root_html(projects, prefix=PREFIX)
    root = {
        "index.html": root_html,
        "index.v1_html": root_html,
        "index.v1_json": render_root_json(projects, last_serial=_SERIAL),
    }
    for variant, data in root.items():
        atomic_write(layout.root_page(variant), data)
        atomic_write(layout.root_page(variant + ".gz"), gzip.compress(data, compresslevel=6, mtime=0))
    json_page = layout.project_page(page.name, "index.v1_json")
    return variants["index.v1_json"], str(json_page.relative_to(repo))


def _store_serial(database: Path) -> None:
    db = Database.open(f"sqlite:///{database}")
    try:
        with db.begin() as conn:
            store_serials(conn, [(canonicalize_name(_PROJECT), "ExamplePkg", _SERIAL)])
    finally:
        db.dispose()


def _config_doc(repo: Path, database: Path, port: int, workers: int) -> dict[str, object]:
    return {
        "listen": f"127.0.0.1:{port}",
        "repo_path": str(repo),
        "prefix": PREFIX,
        "shutdown_grace": "5s",
        "database": {"url": f"sqlite:///{database}"},
        "upstream": {"pypi_url": UPSTREAM, "packages_url": PACKAGES_URL, "redirect_url": PACKAGES_URL},
        "ip_modes": {"default": "302"},
        "cache": {"size_limit": "1g"},
        "schedule": {"index_sync": "7d", "cache": "7d", "run_on_start": False},
        "serve": {"workers": workers},
    }
