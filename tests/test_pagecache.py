"""The page cache: one stat per lookup, fresh after a replace, bounded by bytes, serials read once."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from pypimirror.pagecache import (
    BLOCKING_LIMIT,
    PageCache,
    read_json_api_serial,
    read_simple_html_serial,
    read_simple_json_serial,
)
from pypimirror.errors import StorageError
from pypimirror.storage import atomic_write

_OPENED: list[str] | None = None


def _record_open(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_record_open)  # records only while a test sets _OPENED


@pytest.fixture
def opened() -> Any:
    global _OPENED
    _OPENED = []
    yield _OPENED
    _OPENED = None


@pytest.mark.parametrize(
    ("body", "serial"),
    [
        (b'{"files":[],"meta":{"_last-serial":12,"api-version":"1.4"},"name":"x"}\n', 12),
        (b'{"meta":{"_last-serial":99,"api-version":"1.4"},"projects":[{"_last-serial":1,"name":"a"}]}', 99),
        (b'{ "meta" : { "api-version": "1.4", "_last-serial" : 7 } }', 7),
        (b'{"files":[{"filename":"\\"meta\\":{\\"_last-serial\\":5"}],"meta":{"_last-serial":6}}', 6),
        (b'{"meta":{"api-version":"1.4"},"name":"x"}', None),
        (b"", None),
    ],
)
def test_simple_json_serial_is_the_meta_key(body, serial):
    assert read_simple_json_serial(body) == serial


@pytest.mark.parametrize(
    ("body", "serial"),
    [
        (b"<html>\n</html>\n<!--SERIAL 123-->\n", 123),
        (b"<html>\n</html>\n<!--SERIAL 123-->", 123),
        (b"<html><!--SERIAL 5--></html>\n", None),
        (b"<html></html>\n", None),
    ],
)
def test_simple_html_serial_is_the_closing_comment(body, serial):
    assert read_simple_html_serial(body) == serial


@pytest.mark.parametrize(
    ("body", "serial"),
    [(b'{"info":{"name":"x"},"last_serial":77,"releases":{}}', 77), (b'{"info":{}}', None)],
)
def test_json_api_serial_is_its_last_serial(body, serial):
    assert read_json_api_serial(body) == serial


@pytest.mark.gen_test
async def test_hit_reads_nothing_and_returns_the_same_page(tmp_path: Path, opened):
    path = tmp_path / "index.v1_json"
    atomic_write(path, b'{"meta":{"_last-serial":3}}')
    cache = PageCache()
    first = await cache.get(path, read_simple_json_serial)
    opened.clear()
    second = await cache.get(path, read_simple_json_serial)
    assert second is first
    assert opened == []
    st = path.stat()
    assert (first.last_serial, first.etag) == (3, f'"{st.st_mtime_ns:x}-{st.st_size:x}"')
    assert (cache.stats.hits, cache.stats.misses, cache.stats.bytes) == (1, 1, st.st_size)


@pytest.mark.gen_test
async def test_a_page_is_looked_at_again_only_after_revalidate_after(tmp_path: Path):
    path = tmp_path / "page"
    atomic_write(path, b"old")
    now = [100.0]
    cache = PageCache(revalidate_after=1.0, clock=lambda: now[0])
    assert (await cache.get(path)).body == b"old"
    atomic_write(path, b"new!")
    now[0] += 0.9
    assert (await cache.get(path)).body == b"old"  # within the second: served without a stat
    now[0] += 0.1
    assert (await cache.get(path)).body == b"new!"
    now[0] += 1.0
    path.unlink()
    assert await cache.get(path) is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.entries) == (1, 2, 0)


@pytest.mark.gen_test
async def test_replaced_or_removed_file_is_never_served_stale(tmp_path: Path):
    path = tmp_path / "page"
    atomic_write(path, b"old")
    cache = PageCache(revalidate_after=0)
    old = await cache.get(path)
    atomic_write(path, b"new")  # same size: the new inode tells them apart
    os.utime(path, ns=(old.key[1], old.key[1]))
    new = await cache.get(path)
    assert (old.body, new.body) == (b"old", b"new")
    path.unlink()
    assert await cache.get(path) is None
    assert (cache.stats.entries, cache.stats.bytes) == (0, 0)
    assert await cache.get(tmp_path / "missing" / "page") is None


@pytest.mark.gen_test
async def test_least_recently_used_pages_are_evicted_by_bytes(tmp_path: Path):
    paths = [tmp_path / f"p{i}" for i in range(3)]
    for path in paths:
        atomic_write(path, b"x" * 40)
    cache = PageCache(max_bytes=100)
    await cache.get(paths[0])
    await cache.get(paths[1])
    await cache.get(paths[0])  # now p1 is the least recently used
    await cache.get(paths[2])
    assert (cache.stats.entries, cache.stats.bytes, cache.stats.evictions) == (2, 80, 1)
    await cache.get(paths[0])
    assert cache.stats.hits == 2  # p0 survived
    await cache.get(paths[1])
    assert cache.stats.misses == 4  # p1 did not


@pytest.mark.gen_test
async def test_page_larger_than_the_cache_is_served_but_not_kept(tmp_path: Path):
    path = tmp_path / "big"
    atomic_write(path, b"y" * (BLOCKING_LIMIT + 1))  # also read off the IOLoop
    cache = PageCache(max_bytes=BLOCKING_LIMIT)
    page = await cache.get(path)
    assert page is not None and len(page.body) == BLOCKING_LIMIT + 1
    assert (cache.stats.entries, cache.stats.bytes) == (0, 0)


@pytest.mark.gen_test
async def test_gzip_is_computed_once_and_counted(tmp_path: Path):
    path = tmp_path / "page"
    body = b"<a>link</a>\n" * 10_000
    atomic_write(path, body)
    cache = PageCache()
    page = await cache.get(path)
    compressed = await cache.gzipped(page)
    assert await cache.gzipped(page) is compressed
    assert gzip.decompress(compressed) == body
    assert cache.stats.bytes == len(body) + len(compressed)
    assert page.gzip_etag == page.etag[:-1] + '-gz"'


@pytest.mark.gen_test
async def test_precompressed_sibling_is_used_only_when_not_older(tmp_path: Path, opened):
    page, sibling = tmp_path / "index.v1_json", tmp_path / "index.v1_json.gz"
    atomic_write(page, b"{}")
    atomic_write(sibling, gzip.compress(b"{}"))
    cache = PageCache(revalidate_after=0)
    found = await cache.get_precompressed(page, sibling)
    assert found is not None and gzip.decompress(found.body) == b"{}"
    assert str(page) not in opened  # the plain page is only stat-ed
    mtime_ns = page.stat().st_mtime_ns
    os.utime(sibling, ns=(mtime_ns - 10**9, mtime_ns - 10**9))
    assert await cache.get_precompressed(page, sibling) is None
    assert await cache.get_precompressed(tmp_path / "none", sibling) is None


@pytest.mark.gen_test
async def test_a_path_that_names_no_page_is_none_whatever_the_reason(tmp_path: Path):
    atomic_write(tmp_path / "file", b"x")
    cache = PageCache(revalidate_after=0)
    for absent in (
        tmp_path / "missing",
        tmp_path / ("n" * 300),  # ENAMETOOLONG
        tmp_path / "file" / "index.html",  # ENOTDIR
    ):
        assert await cache.get(absent) is None, absent
        assert await cache.get_precompressed(absent, tmp_path / "file") is None, absent
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert await cache.get(tmp_path / "loop" / "index.html") is None  # ELOOP


@pytest.mark.gen_test
async def test_a_page_that_cannot_be_read_raises_a_storage_error_naming_it(tmp_path: Path):
    cache = PageCache(revalidate_after=0)
    page = tmp_path / "index.html"
    page.mkdir()  # stat works, open fails with EISDIR
    with pytest.raises(StorageError, match=f"cannot read page {page}: Is a directory"):
        await cache.get(page)
    atomic_write(tmp_path / "index.v1_json", b"{}")
    with pytest.raises(StorageError):
        await cache.get_precompressed(tmp_path / "index.v1_json", page)
    assert cache.stats.entries == 0
