"""The bulk scan of stored pages: every listed file with size, project, version and upload time."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from _synthetic_index import synthetic_project_names, write_synthetic_index
from packaging.utils import NormalizedName

from pypimirror.pagescan import ListedFile, read_projects_listed_files, scan_listed_files
from pypimirror.pages import DistFile, ProjectPage, render_project_json
from pypimirror.storage import RepoLayout, atomic_write

PREFIX = "/pypi"


def dist(
    filename: str,
    url: str,
    *,
    size: int = 100,
    upload_time: str | None = "2026-01-01T00:00:00.500000Z",
    yanked: bool | str = False,
) -> DistFile:
    return DistFile(
        filename=filename,
        url=url,
        sha256="0" * 64,
        requires_python=None,
        size=size,
        upload_time=upload_time,
        yanked=yanked,
        core_metadata=False,
        provenance=None,
        version=None,
    )


def store_page(repo: Path, name: str, files: list[DistFile]) -> None:
    page = ProjectPage(
        name=NormalizedName(name), display_name=name, last_serial=1, files=tuple(files), versions=()
    )
    atomic_write(RepoLayout(repo).project_page(NormalizedName(name), "index.v1_json"), render_project_json(page, url_for=str))


def test_every_file_under_the_prefix_is_listed_with_its_facts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    store_page(
        repo,
        "demo",
        [
            dist("demo-1.0.tar.gz", "/pypi/packages/ab/cd/ef01/demo-1.0.tar.gz", size=2048),
            dist("demo-1.1+local-py3-none-any.whl", "/pypi/packages/ab/cd/ef02/demo-1.1%2Blocal-py3-none-any.whl", upload_time=None),
            dist("demo-2.0.tar.gz", "https://elsewhere.example.org/packages/ab/cd/ef03/demo-2.0.tar.gz"),
            dist("demo-3.0.tar.gz", "/pypi/packages-old/ab/cd/ef04/demo-3.0.tar.gz"),
        ],
    )
    assert scan_listed_files(repo, PREFIX) == {
        "ab/cd/ef01/demo-1.0.tar.gz": ListedFile(
            "ab/cd/ef01/demo-1.0.tar.gz", 2048, NormalizedName("demo"), "1.0", "demo-1.0.tar.gz", 1_767_225_600.5
        ),
        "ab/cd/ef02/demo-1.1+local-py3-none-any.whl": ListedFile(
            "ab/cd/ef02/demo-1.1+local-py3-none-any.whl",
            100,
            NormalizedName("demo"),
            "1.1+local",
            "demo-1.1+local-py3-none-any.whl",
            None,
        ),
    }


def test_a_malformed_page_lists_nothing_and_is_logged_while_the_others_are_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    store_page(repo, "good", [dist("good-1.0.tar.gz", "/pypi/packages/ab/cd/ef01/good-1.0.tar.gz")])
    atomic_write(RepoLayout(repo).project_page(NormalizedName("bad"), "index.v1_json"), b'{"not": "a page"')
    (repo / "simple" / "no-json-page").mkdir()
    (repo / "simple" / "Not_Normalized").mkdir()
    with caplog.at_level(logging.WARNING, logger="pypimirror.pagescan"):
        listed = scan_listed_files(repo, PREFIX)
    assert list(listed) == ["ab/cd/ef01/good-1.0.tar.gz"]
    assert "cannot read the stored page of bad" in caplog.text
    assert "1 stored project pages could not be read" in caplog.text


def test_a_repository_without_pages_lists_nothing(tmp_path: Path) -> None:
    assert scan_listed_files(tmp_path / "never-synced", PREFIX) == {}


def test_the_synthetic_repository_has_a_realistic_shape_and_scans_whole(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    index = write_synthetic_index(repo, synthetic_project_names(300), seed=3, huge_share=0.05, prefix="/mirror")
    listed = scan_listed_files(repo, "/mirror")
    assert len(listed) == index.files
    assert sum(f.size for f in listed.values()) == index.total_bytes
    assert {f.project for f in listed.values()} == set(index.projects)
    wheels = sorted(f.size for f in listed.values() if f.filename.endswith(".whl"))
    small = sum(1 for size in wheels if 10 * 1024 <= size <= 2 * 1024 * 1024)
    huge = sum(1 for size in wheels if size >= 50 * 1024 * 1024)
    assert small / len(wheels) > 0.7  # most wheels are 10 KB-2 MB
    assert huge > 0  # and some are machine-learning sized
    assert any(f.filename.endswith(".tar.gz") for f in listed.values())
    assert any("manylinux" in f.filename for f in listed.values())
    assert any("none-any" in f.filename for f in listed.values())
    assert all(f.version and f.upload_time for f in listed.values())
    # The same arguments write the same pages.
    again = tmp_path / "again"
    write_synthetic_index(again, synthetic_project_names(300), seed=3, huge_share=0.05, prefix="/mirror")
    page = Path("simple", "proj-00007", "index.v1_json")
    assert (repo / page).read_bytes() == (again / page).read_bytes()


def test_the_pages_of_a_few_projects_are_read_with_their_yank_markers(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    store_page(repo, "demo", [
        dist("demo-1.0.tar.gz", "/pypi/packages/ab/cd/ef01/demo-1.0.tar.gz"),
        dist("demo-2.0.tar.gz", "/pypi/packages/ab/cd/ef02/demo-2.0.tar.gz", yanked="broken"),
    ])
    store_page(repo, "other", [dist("other-1.0.tar.gz", "/pypi/packages/ab/cd/ef03/other-1.0.tar.gz")])
    listed = read_projects_listed_files(repo, PREFIX, [NormalizedName("demo"), NormalizedName("missing")])
    assert {path: f.yanked for path, f in listed.items()} == {
        "ab/cd/ef01/demo-1.0.tar.gz": False,
        "ab/cd/ef02/demo-2.0.tar.gz": True,
    }


def test_pages_written_before_modified_since_are_not_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    store_page(repo, "old", [dist("old-1.0.tar.gz", "/pypi/packages/ab/cd/ef01/old-1.0.tar.gz")])
    store_page(repo, "new", [dist("new-1.0.tar.gz", "/pypi/packages/ab/cd/ef02/new-1.0.tar.gz")])
    page = RepoLayout(repo).project_page(NormalizedName("old"), "index.v1_json")
    os.utime(page, (1_000_000, 1_000_000))
    names = [NormalizedName("old"), NormalizedName("new")]
    assert list(read_projects_listed_files(repo, PREFIX, names, modified_since=2_000_000)) == [
        "ab/cd/ef02/new-1.0.tar.gz"
    ]
    assert len(read_projects_listed_files(repo, PREFIX, names)) == 2


def test_a_malformed_page_of_a_project_read_for_releases_lists_nothing_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    store_page(repo, "good", [dist("good-1.0.tar.gz", "/pypi/packages/ab/cd/ef01/good-1.0.tar.gz")])
    atomic_write(RepoLayout(repo).project_page(NormalizedName("bad"), "index.v1_json"), b"[1, 2")
    with caplog.at_level(logging.WARNING, logger="pypimirror.pagescan"):
        listed = read_projects_listed_files(repo, PREFIX, [NormalizedName("bad"), NormalizedName("good")])
    assert list(listed) == ["ab/cd/ef01/good-1.0.tar.gz"]
    assert "cannot read the stored page of bad" in caplog.text
