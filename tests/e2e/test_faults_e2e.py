"""Faults met by a running server process: a slowloris client, a database file deleted under it."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from mirrorprocess import request, running_server, stop_server, sync_once, write_config

pytestmark = pytest.mark.e2e

IDLE_S = 1.0


def test_headers_sent_byte_by_byte_are_cut_off_after_timeouts_idle_and_block_nobody(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fake_index, timeouts={"idle": f"{IDLE_S:g}s"})
    with running_server(config, tmp_path / "serve.log") as (process, port):
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        slow.sendall(b"GET /pypi/ HTTP/1.1\r\nHost: mirror\r\n")
        served_meanwhile, closed_after, answer = [], None, b"?"
        try:
            for byte in b"X-Slow: " + b"a" * 500:  # 20 ms a byte: far longer than the timeout
                slow.sendall(bytes([byte]))
                served_meanwhile.append(request(port, "/pypi/")[0])
                if select.select([slow], [], [], 0.02)[0]:
                    answer = slow.recv(65536)
                    closed_after = time.monotonic() - started
                    break
        except ConnectionError:  # the server closed while we were still writing
            closed_after, answer = time.monotonic() - started, b""
        finally:
            slow.close()
        stop_server(process, tmp_path / "serve.log")
    assert closed_after is not None, "the slow client was never cut off"
    assert answer == b""  # closed without an answer: the request was never read whole
    assert IDLE_S <= closed_after < IDLE_S + 5
    assert served_meanwhile and set(served_meanwhile) == {200}


def test_a_database_file_deleted_while_serving_fails_healthz_and_serving_goes_on(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    wheel = fake_index.add_project("voted").releases["1.0"].files[0]
    config = write_config(tmp_path, fake_index)
    sync_once(config)  # a stored page lists the wheel, so a GET of it is a vote worth storing
    log = tmp_path / "serve.log"
    with running_server(config, log) as (process, port):
        assert request(port, "/healthz")[::2] == (200, b"ok\n")
        (tmp_path / "repo" / "pypi-mirror.db").unlink()
        for _ in range(3):
            assert request(port, "/pypi" + wheel.path)[0] == 302  # a vote, which must not be written anywhere
            assert request(port, "/healthz")[::2] == (503, b"database: the file was deleted while in use\n")
        status, _, page = request(port, "/pypi/")
        assert status == 200 and b"the database cannot be read" in page
        stderr = stop_server(process, log)
    assert not (tmp_path / "repo" / "pypi-mirror.db").exists()  # no empty database created in its place
    assert stderr.count("was deleted while in use: nothing is read from or written to it") == 1
    assert "vote writer stopped: 1 queued votes were not recorded" in stderr
    assert "Traceback" not in stderr
