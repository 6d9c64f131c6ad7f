"""Package files over HTTP: tiers, ranges, validators, redirects, votes, and hostile paths."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from pypimirror.buffers import BufferStats
from pypimirror.handlers.files import UnsatisfiableRange, content_type_for, select_range

HASH = "ab" * 2 + "cd" * 28  # 60 hex digits
RELPATH = f"ab/cd/{HASH}/demo-1.0-py3-none-any.whl"
URL = f"/pypi/packages/{RELPATH}"
REDIRECT_URL = "http://files.example.org/packages"
PIP_UA = "pip/26.2.1 {\"python\":\"3.12\"}"
DATA = bytes(range(256)) * 40  # 10240 bytes
MIB = 1024 * 1024


def place(root: Path, relpath: str, data: bytes) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    return tmp_path / "hot"


@pytest.fixture
def cold(tmp_path: Path) -> Path:
    return tmp_path / "cold"


@pytest.fixture
def wheel(hot: Path) -> Path:
    return place(hot, RELPATH, DATA)


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-500", 100, None),  # the whole file: a plain 200
        ("bytes=0-", 100, None),
        ("bytes=0-999", 100, None),
        ("bytes=10-999", 100, (10, 100)),
        ("bytes= 5 - 6", 100, (5, 7)),
        ("bytes=9-5", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-", 100, None),
        ("bytes=１-２", 100, None),  # non-ASCII digits
        ("items=0-1", 100, None),
    ],
)
def test_select_range_reads_one_byte_range(header, size, expected):
    assert select_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100), ("bytes=-5", 0)]
)
def test_select_range_refuses_ranges_outside_the_file(header, size):
    with pytest.raises(UnsatisfiableRange):
        select_range(header, size)


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("demo-1.0-py3-none-any.whl", "application/zip"),
        ("demo-1.0.tar.gz", "application/gzip"),
        ("Demo-1.0.ZIP", "application/zip"),
        ("demo-1.0-py3-none-any.whl.metadata", "text/plain; charset=utf-8"),
        ("demo-1.0.exe", "application/octet-stream"),
    ],
)
def test_content_type_follows_the_file_name(filename, content_type):
    assert content_type_for(filename) == content_type


# --------------------------------------------------------------------------- local files


@pytest.mark.gen_test
async def test_local_file_is_served_with_cheap_validators(fetch, wheel: Path, access_log):
    response = await fetch(URL)
    st = wheel.stat()
    assert response.code == 200
    assert response.body == DATA
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    assert response.headers["Last-Modified"] == formatdate(int(st.st_mtime), usegmt=True)
    assert "Content-Encoding" not in response.headers
    (entry,) = access_log.entries
    assert (entry.method, entry.path, entry.status, entry.bytes_sent) == ("GET", URL, 200, len(DATA))


@pytest.mark.gen_test
async def test_hottest_tier_holding_the_file_serves_it(fetch, hot: Path, cold: Path):
    place(cold, RELPATH, b"cold copy")
    assert (await fetch(URL)).body == b"cold copy"
    place(hot, RELPATH, b"hot copy")
    assert (await fetch(URL)).body == b"hot copy"


@pytest.mark.gen_test
async def test_sdist_is_never_sent_with_a_content_encoding(fetch, hot: Path):
    relpath = f"ab/cd/{HASH}/demo-1.0.tar.gz"
    place(hot, relpath, b"\x1f\x8b not really gzip")
    response = await fetch(f"/pypi/packages/{relpath}", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Type"] == "application/gzip"
    assert "Content-Encoding" not in response.headers
    assert response.body == b"\x1f\x8b not really gzip"


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-99", 206, DATA[:100], f"bytes 0-99/{len(DATA)}"),
        ("bytes=-100", 206, DATA[-100:], f"bytes {len(DATA) - 100}-{len(DATA) - 1}/{len(DATA)}"),
        ("bytes=10000-", 206, DATA[10000:], f"bytes 10000-{len(DATA) - 1}/{len(DATA)}"),
        ("bytes=0-", 200, DATA, None),
        ("bytes=0-1,4-5", 200, DATA, None),
        (f"bytes={len(DATA)}-", 416, b"416 Range Not Satisfiable\n", f"bytes */{len(DATA)}"),
        ("bytes=-0", 416, b"416 Range Not Satisfiable\n", f"bytes */{len(DATA)}"),
    ],
)
@pytest.mark.gen_test
async def test_range_requests_get_206_or_416(fetch, wheel, access_log, range_header, status, body, content_range):
    response = await fetch(URL, headers={"Range": range_header})
    assert response.code == status
    assert response.body == body
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers.get("Content-Range") == content_range
    assert access_log.entries[-1].bytes_sent == len(body)


@pytest.mark.gen_test
async def test_head_gives_the_headers_of_get_and_no_body(fetch, wheel, access_log):
    head = await fetch(URL, method="HEAD")
    ranged = await fetch(URL, method="HEAD", headers={"Range": "bytes=0-9"})
    assert (head.code, head.body, head.headers["Content-Length"]) == (200, b"", str(len(DATA)))
    assert (ranged.code, ranged.body, ranged.headers["Content-Range"]) == (206, b"", f"bytes 0-9/{len(DATA)}")
    assert ranged.headers["Content-Length"] == "10"
    assert [e.bytes_sent for e in access_log.entries] == [0, 0]


@pytest.mark.gen_test
async def test_if_range_applies_the_range_only_to_the_same_file(fetch, wheel):
    etag = (await fetch(URL, method="HEAD")).headers["ETag"]
    modified = formatdate(int(wheel.stat().st_mtime), usegmt=True)
    expected = {etag: 206, modified: 206, '"stale"': 200, f"W/{etag}": 200, formatdate(0, usegmt=True): 200}
    for validator, status in expected.items():
        response = await fetch(URL, headers={"Range": "bytes=0-9", "If-Range": validator})
        assert response.code == status, validator
        assert response.body == (DATA[:10] if status == 206 else DATA)


@pytest.mark.parametrize(
    "date", ["Sat, 01 Jan 10000 00:00:00 GMT", "Sat Jan  1 00:00:00 10000", "Tue, 31 Feb 2000 00:00:00 GMT"]
)
@pytest.mark.gen_test
async def test_unreadable_validator_dates_are_ignored(fetch, wheel, date):
    since = await fetch(URL, headers={"If-Modified-Since": date})
    ranged = await fetch(URL, headers={"Range": "bytes=0-9", "If-Range": date})
    assert (since.code, since.body) == (200, DATA)
    assert (ranged.code, ranged.body) == (200, DATA)  # a validator that matches nothing: the whole file


@pytest.mark.gen_test
async def test_conditional_requests_get_304(fetch, wheel):
    first = await fetch(URL)
    by_etag = await fetch(URL, headers={"If-None-Match": first.headers["ETag"]})
    by_date = await fetch(URL, headers={"If-Modified-Since": first.headers["Last-Modified"]})
    changed = await fetch(URL, headers={"If-None-Match": '"other"'})
    assert (by_etag.code, by_etag.body, by_date.code, changed.code) == (304, b"", 304, 200)


@pytest.mark.gen_test
async def test_replaced_file_gets_a_new_etag(fetch, wheel: Path):
    before = (await fetch(URL)).headers["ETag"]
    time.sleep(0.01)
    place(wheel.parents[3], RELPATH, DATA[::-1])
    after = await fetch(URL, headers={"If-None-Match": before})
    assert (after.code, after.body) == (200, DATA[::-1])


# --------------------------------------------------------------------------- held files against their page


LISTED = f"ab/ab/{'ab' * 30}/demo-1.0-py3-none-any.whl"  # the one wheel of conftest's make_page("demo"), 1234 bytes


@pytest.mark.parametrize("size", [1233, 1235, 0])
@pytest.mark.gen_test
async def test_a_held_file_whose_size_differs_from_its_page_is_not_sent_but_redirected_and_logged_once(
    fetch, hot: Path, make_page, write_project, votes, caplog, size: int
):
    write_project(make_page("demo"))
    place(hot, LISTED, b"x" * size)
    for method in ("GET", "HEAD", "GET"):
        response = await fetch(f"/pypi/packages/{LISTED}", method=method)
        assert (response.code, response.headers["Location"]) == (302, f"{REDIRECT_URL}/{LISTED}")
    assert caplog.text.count(f"{LISTED} is {size} bytes in the cache but its page lists 1234") == 1
    assert [path for path, _, _ in votes.offers] == [LISTED, LISTED]  # still a vote: the client wanted it


@pytest.mark.gen_test
async def test_a_held_file_of_the_listed_size_is_sent_and_its_page_read_once(
    fetch, hot: Path, layout, make_page, write_project, open_audit
):
    write_project(make_page("demo"))
    place(hot, LISTED, b"y" * 1234)
    with open_audit:
        for _ in range(3):
            response = await fetch(f"/pypi/packages/{LISTED}")
            assert (response.code, response.body) == (200, b"y" * 1234)
    page = str(layout.project_page("demo", "index.v1_json"))
    assert open_audit.opened.count(page) == 1  # then a dict lookup per request


@pytest.mark.gen_test
async def test_a_held_file_no_page_lists_and_its_metadata_are_sent_as_they_are(
    fetch, hot: Path, make_page, write_project
):
    write_project(make_page("demo"))
    other = LISTED.replace("demo-1.0", "demo-2.0")
    place(hot, other, b"unlisted")
    place(hot, LISTED + ".metadata", b"Metadata-Version: 2.1\n")
    assert (await fetch(f"/pypi/packages/{other}")).body == b"unlisted"
    assert (await fetch(f"/pypi/packages/{LISTED}.metadata")).body == b"Metadata-Version: 2.1\n"


# --------------------------------------------------------------------------- misses and votes


@pytest.mark.gen_test
async def test_missing_file_redirects_to_the_upstream_and_votes(fetch, votes, access_log):
    response = await fetch(URL + "?ignored=1", headers={"User-Agent": PIP_UA})
    assert (response.code, response.headers["Location"]) == (302, f"{REDIRECT_URL}/{RELPATH}")
    assert votes.offers == [(RELPATH, "127.0.0.0", PIP_UA)]
    assert (access_log.entries[0].status, access_log.entries[0].bytes_sent) == (302, 0)


@pytest.mark.gen_test
async def test_redirect_location_is_escaped_ascii(fetch):
    relpath = f"ab/cd/{HASH}/demo-1.0+local%20x.whl"
    response = await fetch(f"/pypi/packages/{relpath}")
    assert response.headers["Location"] == f"{REDIRECT_URL}/ab/cd/{HASH}/demo-1.0+local%20x.whl"


@pytest.mark.gen_test
async def test_only_get_of_a_distribution_votes(fetch, wheel, hot: Path, votes):
    place(hot, RELPATH + ".metadata", b"Metadata-Version: 2.1\n")
    await fetch(URL, method="HEAD")
    metadata = await fetch(URL + ".metadata")
    await fetch(URL, headers={"User-Agent": "curl/8"})
    assert metadata.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert metadata.body == b"Metadata-Version: 2.1\n"
    assert votes.offers == [(RELPATH, "127.0.0.0", "curl/8")]


@pytest.mark.gen_test
async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(fetch, votes, access_log):
    await fetch(URL, headers={"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "198.51.100.9"})
    assert votes.offers[0][1] == "127.0.0.0"
    assert access_log.entries[0].client_ip == "127.0.0.1"


@pytest.mark.parametrize("config_data", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
@pytest.mark.gen_test
async def test_forwarded_for_from_a_trusted_proxy_names_the_client(config_data, fetch, votes, access_log):
    await fetch(URL, headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.7, 127.0.0.1"})
    assert votes.offers[0][1] == "203.0.113.0"
    assert access_log.entries[0].client_ip == "203.0.113.7"


@pytest.mark.gen_test
async def test_packages_without_slash_redirects(fetch):
    response = await fetch("/pypi/packages")
    assert (response.code, response.headers["Location"]) == (301, "/pypi/packages/")


# --------------------------------------------------------------------------- hostile input

SECRET = b"secret outside every tier"


@pytest.fixture
def secret(tmp_path: Path, wheel: Path) -> Path:
    path = tmp_path / "secret.whl"
    path.write_bytes(SECRET)
    return path


@pytest.mark.parametrize(
    "target",
    [
        b"/pypi/packages/../../secret.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/..%2f..%2f..%2f..%2fsecret.whl",
        b"/pypi/packages/%2e%2e/%2e%2e/%2e%2e/secret.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/%2e%2e",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/%252e%252e%252fsecret.whl",
        b"/pypi/packages/ab//cd/" + HASH.encode() + b"/demo-1.0-py3-none-any.whl",
        b"/pypi/packages//" + HASH.encode() + b"/secret.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/..\\..\\..\\..\\secret.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/%5c..%5csecret.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/demo%00.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/demo\x00.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/d\xffmo.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/d%ffmo.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/" + b"a" * 5000 + b".whl",
        b"/pypi/packages/AB/cd/" + HASH.encode() + b"/demo-1.0-py3-none-any.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/.hidden.whl",
        b"/pypi/packages/ab/cd/" + HASH.encode() + b"/demo-1.0-py3-none-any.whl/",
        b"/pypi/packages/" + str(Path("/etc/passwd")).encode(),
    ],
)
@pytest.mark.gen_test
async def test_hostile_paths_are_refused_and_open_nothing(raw_request, secret: Path, tmp_path, open_audit, target):
    with open_audit:
        answer = await raw_request(target)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:200]
    assert SECRET not in answer
    assert [p for p in open_audit.opened if p.startswith(str(tmp_path))] == []


@pytest.mark.gen_test
async def test_symlinks_inside_a_tier_are_never_followed(fetch, hot: Path, cold: Path, secret, tmp_path, open_audit):
    link_file = hot / "ab" / "cd" / HASH / "link-1.0-py3-none-any.whl"
    link_file.symlink_to(secret)
    outside = tmp_path / "outside" / "cd" / HASH
    outside.mkdir(parents=True)
    (outside / "demo-2.0-py3-none-any.whl").write_bytes(SECRET)
    (cold / "ab").mkdir(parents=True)
    (cold / "ab" / "cd").symlink_to(tmp_path / "outside" / "cd")
    for name in ("link-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"):
        with open_audit:
            response = await fetch(f"/pypi/packages/ab/cd/{HASH}/{name}")
        assert response.code == 302  # not held here: the client goes upstream
        assert SECRET not in response.body
    assert [p for p in open_audit.opened if p.startswith(str(tmp_path))] == []
    with open_audit:
        assert (await fetch(URL)).body == DATA  # the audit does see the files we do open
    assert str(hot / RELPATH) in open_audit.opened


# --------------------------------------------------------------------------- slow clients


@pytest.mark.parametrize("config_data", [{"timeouts": {"write": "1s"}}], indirect=True)
@pytest.mark.gen_test(timeout=30)
async def test_client_that_stops_reading_is_cut_off_after_the_write_timeout(
    config_data, hot: Path, http_server, http_port, access_log, services
):
    size = 48 * 1024 * 1024
    place(hot, RELPATH, b"\0" * size)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", http_port))
        await loop.sock_sendall(sock, f"GET {URL} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
        await asyncio.sleep(3)  # read nothing: the server's flush stalls
        received = 0
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10):
            received += len(chunk)
    finally:
        sock.close()
    assert 0 < received < size  # the connection ended before the whole file was sent
    (entry,) = access_log.entries
    assert entry.status == 200 and 0 < entry.bytes_sent < size
    await asyncio.sleep(0.01)
    assert services.in_flight.count == 0


@pytest.mark.parametrize("config_data", [{"timeouts": {"write": "1s"}}], indirect=True)
@pytest.mark.gen_test(timeout=30)
async def test_slow_but_steady_client_gets_the_whole_file_however_long_it_takes(
    config_data, hot: Path, http_server, http_port, access_log
):
    size = 8 * 1024 * 1024
    content = os.urandom(1024) * (size // 1024)
    place(hot, RELPATH, content)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    started = time.monotonic()
    received = bytearray()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", http_port))
        await loop.sock_sendall(sock, f"GET {URL} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode())
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 64 * 1024), 10):
            received += chunk
            await asyncio.sleep(0.015)  # about 4 MB/s: each 1 MiB chunk drains well within 1 s
    finally:
        sock.close()
    assert time.monotonic() - started > 1.5  # longer than timeouts.write ...
    assert received.endswith(content)  # ... and yet complete
    assert access_log.entries[0].bytes_sent == size


# --------------------------------------------------------------------------- the buffer budget


@pytest.mark.gen_test
async def test_a_download_takes_a_full_chunk_buffer_from_the_budget_and_gives_it_back(fetch, hot: Path, services):
    content = os.urandom(1024) * 2500  # a few chunks, the last one short
    place(hot, RELPATH, content)
    assert (await fetch(URL)).body == content
    assert services.buffers.stats == BufferStats(limit=256 * MIB, in_use=0, squeezed=0)


@pytest.mark.gen_test
async def test_a_download_starting_while_the_budget_is_spent_gets_the_whole_file_in_small_chunks(
    fetch, hot: Path, services
):
    content = os.urandom(1024) * 2500
    place(hot, RELPATH, content)
    budget = services.buffers
    held_elsewhere = budget.take(budget.limit, 0)
    assert (await fetch(URL)).body == content
    assert (budget.in_use, budget.squeezed) == (held_elsewhere, 1)


@pytest.mark.gen_test
async def test_a_file_that_fits_a_small_chunk_is_not_counted_as_squeezed_when_the_budget_is_spent(
    fetch, wheel: Path, services
):
    budget = services.buffers
    held_elsewhere = budget.take(budget.limit, 0)
    assert (await fetch(URL)).body == DATA
    assert (budget.in_use, budget.squeezed) == (held_elsewhere, 0)
