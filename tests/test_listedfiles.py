"""What the stored pages list: project from path, pages read from a real repo, the per-project cache."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from pypimirror.listedfiles import (
    NOT_LOADED,
    ListedFile,
    ListedFiles,
    lookup_listed_files,
    project_of,
)
from pypimirror.pages import DistFile, ProjectPage, render_project_json, rewrite_file_url
from pypimirror.storage import RepoLayout, atomic_write

PREFIX = "/pypi"
PACKAGES_URL = "http://files.example.org/packages"
SHA = "ab" * 32


class Clock:
    """A settable monotonic clock for the revalidation interval."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def relpath(filename: str, digest: str = SHA) -> str:
    return f"{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}"


def dist(filename: str, size: int, *, url: str | None = None, digest: str = SHA) -> DistFile:
    return DistFile(
        filename=filename, url=url or f"{PACKAGES_URL}/{relpath(filename, digest)}", sha256=digest,
        requires_python=None, size=size, upload_time=None, yanked=False, core_metadata="cd" * 32,
        provenance=None, version="1.0",
    )


def write_page(repo: Path, name: str, *files: DistFile) -> Path:
    """The project's index.v1_json as the index sync writes it (file URLs under our prefix)."""
    page = ProjectPage(name=NormalizedName(name), display_name=name, last_serial=1, files=files, versions=("1.0",))
    url_for = partial(rewrite_file_url, packages_url=PACKAGES_URL, prefix=PREFIX)
    path = RepoLayout(repo).project_page(NormalizedName(name), "index.v1_json")
    atomic_write(path, render_project_json(page, url_for=url_for))
    return path


# --------------------------------------------------------------------------- project_of


@pytest.mark.parametrize(
    ("path", "project"),
    [
        (relpath("Demo_Pkg-1.0-py3-none-any.whl"), "demo-pkg"),
        (relpath("demo.pkg-1.0.tar.gz"), "demo-pkg"),
        (relpath("demo-1.0.zip"), "demo"),
        (relpath("Foo_Bar-0.3-py2.7.egg"), "foo-bar"),
        (relpath("foo-bar-2.1.tar.bz2"), "foo-bar"),
        (relpath("foo2-1.0.tgz"), "foo2"),
        (relpath("pkg-1.0.beta-weird.tar.gz"), "pkg"),  # no PEP 440 version: the legacy rule
    ],
)
def test_project_of_reads_the_project_from_the_file_name(path: str, project: str) -> None:
    assert project_of(path) == project


@pytest.mark.parametrize(
    "path",
    [
        relpath("demo-1.0-py3-none-any.whl.metadata"),
        relpath("no-version-here.whl"),
        relpath("README.txt"),
        relpath("-1.0.tar.bz2"),
        relpath("..-1.0.egg"),
    ],
)
def test_project_of_a_name_that_says_no_project_is_none(path: str) -> None:
    assert project_of(path) is None


# --------------------------------------------------------------------------- reading pages


def test_lookup_reads_sizes_and_digests_of_listed_paths_only(tmp_path: Path) -> None:
    write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 1234),
               dist("demo-1.0.tar.gz", 99, url="http://elsewhere.example.org/demo-1.0.tar.gz"))
    wheel = relpath("demo-1.0-py3-none-any.whl")
    made_up = relpath("demo-9.9-py3-none-any.whl")
    found = lookup_listed_files(tmp_path, PREFIX, [wheel, made_up, relpath("demo-1.0.tar.gz"),
                                                   relpath("absent-1.0.tar.gz")])
    assert found == {wheel: ListedFile(wheel, 1234, SHA, "cd" * 32)}  # not another host's file


def test_a_malformed_page_lists_nothing_and_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    page = write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 1234))
    page.write_bytes(b'{"meta": <<garbage')
    assert lookup_listed_files(tmp_path, PREFIX, [relpath("demo-1.0-py3-none-any.whl")]) == {}
    assert "cannot read the stored page of demo" in caplog.text


# --------------------------------------------------------------------------- ListedFiles


@pytest.mark.gen_test
async def test_a_project_is_read_once_then_answered_from_memory(tmp_path: Path) -> None:
    page = write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 1234))
    listed = ListedFiles(tmp_path, PREFIX, clock=Clock())
    wheel = relpath("demo-1.0-py3-none-any.whl")
    assert listed.get_fresh(wheel) is NOT_LOADED
    assert (await listed.lookup(wheel)) == ListedFile(wheel, 1234, SHA, "cd" * 32)
    page.unlink()  # answered from memory until the interval has passed
    assert listed.get_fresh(wheel) == ListedFile(wheel, 1234, SHA, "cd" * 32)
    assert listed.get_fresh(relpath("demo-2.0-py3-none-any.whl")) is None  # listed nowhere, known at once
    assert listed.get_fresh(relpath("README.txt")) is None  # names no project


@pytest.mark.gen_test
async def test_a_replaced_page_is_read_again_after_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 1234))
    listed = ListedFiles(tmp_path, PREFIX, clock=clock)
    wheel = relpath("demo-1.0-py3-none-any.whl")
    assert (await listed.lookup(wheel)) is not None
    write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 4321))
    assert (await listed.lookup(wheel)).size == 1234  # type: ignore[union-attr]
    clock.now += 1.0
    assert listed.get_fresh(wheel) is NOT_LOADED
    assert (await listed.lookup(wheel)).size == 4321  # type: ignore[union-attr]


@pytest.mark.gen_test
async def test_a_page_written_after_a_miss_is_found(tmp_path: Path) -> None:
    clock = Clock()
    listed = ListedFiles(tmp_path, PREFIX, clock=clock)
    wheel = relpath("demo-1.0-py3-none-any.whl")
    assert (await listed.lookup(wheel)) is None
    write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 1234))
    clock.now += 1.0
    assert (await listed.lookup(wheel)) is not None


@pytest.mark.gen_test
async def test_concurrent_lookups_of_a_cold_project_read_its_page_once(tmp_path: Path) -> None:
    page = write_page(tmp_path, "demo", dist("demo-1.0-py3-none-any.whl", 1234))
    listed = ListedFiles(tmp_path, PREFIX, clock=Clock())
    wheel = relpath("demo-1.0-py3-none-any.whl")
    reads: list[str] = []
    with _PageReads(str(page), reads):
        found = await asyncio.gather(*(listed.lookup(wheel) for _ in range(20)))
    assert all(entry is not None and entry.size == 1234 for entry in found)
    assert len(reads) == 1
    assert reads[0] != "MainThread"  # read in a worker thread, never on the loop's


def test_worker_threads_sharing_blocking_lookups_read_a_cold_page_once(tmp_path: Path) -> None:
    """The vote writer and the hit counters' flusher share one instance from their own threads."""
    page = write_page(tmp_path, "demo", *(dist(f"demo-1.{n}-py3-none-any.whl", n) for n in range(50)))
    listed = ListedFiles(tmp_path, PREFIX, clock=Clock())
    paths = [relpath(f"demo-1.{n}-py3-none-any.whl") for n in range(50)]
    start = threading.Barrier(8)
    found: list[int] = []

    def look_up_all() -> None:
        start.wait()
        found.extend(entry.size for path in paths if (entry := listed.lookup_blocking(path)) is not None)

    reads: list[str] = []
    with _PageReads(str(page), reads):
        threads = [threading.Thread(target=look_up_all) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert sorted(found) == sorted(list(range(50)) * 8)
    assert len(reads) == 1


def test_memory_is_bounded_by_files_and_least_recently_used_projects_go_first(tmp_path: Path) -> None:
    for name in ("alpha", "beta", "gamma"):
        write_page(tmp_path, name, *(dist(f"{name}-1.{n}-py3-none-any.whl", n) for n in range(3)))
    listed = ListedFiles(tmp_path, PREFIX, max_files=6, clock=Clock())
    alpha, beta, gamma = (relpath(f"{name}-1.0-py3-none-any.whl") for name in ("alpha", "beta", "gamma"))
    assert listed.lookup_blocking(alpha) is not None and listed.lookup_blocking(beta) is not None
    assert listed.get_fresh(alpha) is not None  # alpha used last: beta is now the oldest
    assert listed.lookup_blocking(gamma) is not None
    assert listed.get_fresh(beta) is NOT_LOADED
    assert listed.get_fresh(alpha) is not None and listed.get_fresh(gamma) is not None


def test_a_project_larger_than_the_bound_is_still_answered(tmp_path: Path) -> None:
    write_page(tmp_path, "big", *(dist(f"big-1.{n}-py3-none-any.whl", n) for n in range(10)))
    listed = ListedFiles(tmp_path, PREFIX, max_files=4, clock=Clock())
    path = relpath("big-1.7-py3-none-any.whl")
    assert listed.lookup_blocking(path) == ListedFile(path, 7, SHA, "cd" * 32)
    assert listed.get_fresh(path) is not None


def test_a_size_mismatch_is_new_once_per_path_and_size(tmp_path: Path) -> None:
    listed = ListedFiles(tmp_path, PREFIX)
    assert listed.is_new_mismatch("ab/cd/x/a.whl", 10)
    assert not listed.is_new_mismatch("ab/cd/x/a.whl", 10)
    assert listed.is_new_mismatch("ab/cd/x/a.whl", 11)


class _PageReads:
    """Records the name of each thread that opens ``path`` (audit event ``open``) inside ``with``."""

    active: list[_PageReads] = []

    def __init__(self, path: str, reads: list[str]) -> None:
        self.path, self.reads = path, reads

    def __enter__(self) -> _PageReads:
        _PageReads.active.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _PageReads.active.remove(self)


def _record_page_reads(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _PageReads.active and isinstance(args[0], str | os.PathLike):
        for watch in _PageReads.active:
            if os.fspath(args[0]) == watch.path:
                watch.reads.append(threading.current_thread().name)


sys.addaudithook(_record_page_reads)  # audit hooks cannot be removed; this one records only inside `with`
