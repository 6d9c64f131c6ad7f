"""UpstreamClient.download_to: a body streamed to a file, verified, retried only where that helps.

First with a swapped fetch (what reaches the file, chunk by chunk), then with libcurl against the
fake upstream (truncated and corrupted bodies, stalls, cancellation, reused curl handles).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from pypimirror.errors import IntegrityError, UpstreamStatusError, UpstreamUnavailable
from pypimirror.upstream import UpstreamClient, UpstreamSettings

BODY = b"0123456789" * 1000
DIGEST = hashlib.sha256(BODY).hexdigest()
URL = "http://127.0.0.1:9/packages/ab/cd/ef/demo-1.0.tar.gz"


def make_client(fetch: Any = None, *, attempts: int = 3, stall_timeout: float = 5.0) -> tuple[UpstreamClient, list[float]]:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    settings = UpstreamSettings(
        user_agent="pypimirror-test/1", proxy=None, connect_timeout=2.0, stall_timeout=stall_timeout, attempts=attempts
    )
    return UpstreamClient(settings, fetch=fetch, sleep=sleep), delays


class StreamingFetch:
    """Plays answers in order; each answer's chunks go to the request's streaming_callback."""

    def __init__(self, *answers: tuple[int, Sequence[bytes], dict[str, str]], observe: Path | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[HTTPRequest] = []
        self.observe = observe
        self.seen_sizes: list[int] = []

    async def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        status, chunks, headers = self.answers.pop(0)
        assert request.streaming_callback is not None
        for chunk in chunks:
            request.streaming_callback(chunk)
            if self.observe is not None:
                self.seen_sizes.append(self.observe.stat().st_size)
        return HTTPResponse(request, status, headers=HTTPHeaders(headers), buffer=BytesIO(b""))


def ok(
    chunks: Sequence[bytes] = (BODY[:4000], BODY[4000:]), headers: dict[str, str] | None = None
) -> tuple[int, Sequence[bytes], dict[str, str]]:
    return 200, chunks, {"Content-Length": str(sum(map(len, chunks))), **(headers or {})}


# -- swapped fetch ------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_download_writes_every_chunk_and_returns_size_digest_and_last_modified(tmp_path: Path) -> None:
    fetch = StreamingFetch(ok(headers={"Last-Modified": "Tue, 02 Jan 2024 03:04:05 GMT"}))
    client, _ = make_client(fetch)
    result = await client.download_to(URL, tmp_path / "f", size=len(BODY), sha256=DIGEST)
    assert (tmp_path / "f").read_bytes() == BODY
    assert (result.size, result.sha256, result.last_modified) == (len(BODY), DIGEST, 1704164645.0)
    request = fetch.requests[0]
    assert (request.method, request.request_timeout, request.decompress_response) == ("GET", 0, False)


@pytest.mark.gen_test
async def test_download_with_wrong_sha256_is_discarded_without_retrying(tmp_path: Path) -> None:
    fetch = StreamingFetch(ok())
    client, _ = make_client(fetch)
    with pytest.raises(IntegrityError, match=f"expected sha256 {'0' * 64}, got sha256 {DIGEST}"):
        await client.download_to(URL, tmp_path / "f", sha256="0" * 64)
    assert not (tmp_path / "f").exists()
    assert len(fetch.requests) == 1


@pytest.mark.gen_test
async def test_body_longer_than_size_is_never_written_past_size(tmp_path: Path) -> None:
    fetch = StreamingFetch(ok([BODY[:6000], BODY[6000:]]), observe=tmp_path / "f")
    client, _ = make_client(fetch)
    with pytest.raises(IntegrityError, match="expected 7000 bytes, got more than 7000 bytes"):
        await client.download_to(URL, tmp_path / "f", size=7000)
    assert fetch.seen_sizes == [6000, 6000]
    assert not (tmp_path / "f").exists()


@pytest.mark.gen_test
async def test_body_shorter_than_content_length_is_retried_then_reported(tmp_path: Path) -> None:
    short = (200, [BODY[:10]], {"Content-Length": str(len(BODY))})
    fetch = StreamingFetch(short, short)
    client, delays = make_client(fetch, attempts=2)
    with pytest.raises(UpstreamUnavailable, match=f"body ended after 10 of {len(BODY)} bytes"):
        await client.download_to(URL, tmp_path / "f")
    assert len(delays) == 1
    assert not (tmp_path / "f").exists()


@pytest.mark.gen_test
async def test_retry_truncates_what_the_failed_attempt_wrote(tmp_path: Path) -> None:
    fetch = StreamingFetch((503, [b"busy" * 100], {}), ok())
    client, delays = make_client(fetch)
    result = await client.download_to(URL, tmp_path / "f", sha256=DIGEST)
    assert (tmp_path / "f").read_bytes() == BODY
    assert result.size == len(BODY)
    assert len(delays) == 1


@pytest.mark.gen_test
async def test_not_found_is_final_and_removes_the_file(tmp_path: Path) -> None:
    fetch = StreamingFetch((404, [b"not here"], {}))
    client, delays = make_client(fetch)
    with pytest.raises(UpstreamStatusError, match="upstream answered 404 Not Found") as caught:
        await client.download_to(URL, tmp_path / "f")
    assert caught.value.status == 404
    assert delays == []
    assert not (tmp_path / "f").exists()


@pytest.mark.gen_test
async def test_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    class FullDisk(BytesIO):
        name = "full"

        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    from pypimirror.upstream import _DownloadSink

    sink = _DownloadSink(FullDisk(), None, None)
    sink.write(b"x")
    assert sink.failure is not None
    assert "No space left on device" in str(sink.failure)
    assert sink._progress(0, 0, 0, 0) == 1  # aborts the transfer


# -- libcurl against the fake upstream -------------------------------------------------------


@pytest.fixture
def demo(fake_index: FakeIndex) -> Any:
    fake_index.add_project("demo", ["1.0"], sdist=False, payload_size=300_000)
    return fake_index.files("demo")[0]


@pytest.mark.gen_test
async def test_real_download_matches_the_upstream_file(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    client, _ = make_client()
    result = await client.download_to(fake_index.file_url(demo), tmp_path / "f", size=demo.size, sha256=demo.sha256)
    assert (tmp_path / "f").read_bytes() == demo.content
    upload = fake_index.release("demo", "1.0").upload_time.replace(tzinfo=UTC, microsecond=0)
    assert result.last_modified == upload.timestamp()


@pytest.mark.gen_test
async def test_truncated_body_is_retried_and_the_second_attempt_kept(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    fake_index.truncate_next(demo.path, at_bytes=1000)
    client, delays = make_client()
    await client.download_to(fake_index.file_url(demo), tmp_path / "f", size=demo.size, sha256=demo.sha256)
    assert (tmp_path / "f").read_bytes() == demo.content
    assert fake_index.count_requests(demo.path) == 2
    assert len(delays) == 1


@pytest.mark.gen_test
async def test_always_truncated_body_fails_after_the_attempts(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    fake_index.truncate_next(demo.path, at_bytes=1000, times=None)
    client, _ = make_client(attempts=2)
    with pytest.raises(UpstreamUnavailable, match="transfer closed early"):
        await client.download_to(fake_index.file_url(demo), tmp_path / "f", size=demo.size, sha256=demo.sha256)
    assert fake_index.count_requests(demo.path) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gen_test
async def test_corrupted_body_is_discarded(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    fake_index.corrupt_next(demo.path)
    client, _ = make_client()
    with pytest.raises(IntegrityError, match=f"expected sha256 {demo.sha256}"):
        await client.download_to(fake_index.file_url(demo), tmp_path / "f", size=demo.size, sha256=demo.sha256)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gen_test(timeout=10)
async def test_stalled_transfer_times_out_instead_of_hanging(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    fake_index.delay(demo.path, 5)
    client, _ = make_client(attempts=1, stall_timeout=1)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        await client.download_to(fake_index.file_url(demo), tmp_path / "f")
    assert time.monotonic() - started < 4


@pytest.mark.gen_test(timeout=10)
async def test_cancel_aborts_the_transfer_and_later_downloads_still_work(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    fake_index.delay(demo.path, 5)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    client, _ = make_client(attempts=1)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="cancelled"):
        await client.download_to(fake_index.file_url(demo), tmp_path / "f", cancel=cancel)
    assert time.monotonic() - started < 3
    assert not (tmp_path / "f").exists()
    # tornado resets a handle after each transfer, so the aborting callback does not linger.
    for _ in range(2):
        await client.download_to(fake_index.file_url(demo), tmp_path / "g", sha256=demo.sha256)
        assert (await client.head(fake_index.file_url(demo))).status == 200


@pytest.mark.gen_test
async def test_cancel_before_start_sends_nothing(
    tmp_path: Path, fake_index: FakeIndex, demo: Any, curl_client: AsyncHTTPClient
) -> None:
    cancel = asyncio.Event()
    cancel.set()
    client, _ = make_client()
    with pytest.raises(UpstreamUnavailable, match="download cancelled"):
        await client.download_to(fake_index.file_url(demo), tmp_path / "f", cancel=cancel)
    assert fake_index.count_requests(demo.path) == 0
