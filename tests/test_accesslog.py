"""The access log: the seed's two line formats, escaping, and the file (flush, reopen, close)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pypimirror.accesslog import AccessEntry, AccessLog, NullAccessLog, format_combined, format_mirror_json
from pypimirror.errors import StorageError

NEW_YEAR_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z

ENTRY = AccessEntry(
    method="GET",
    path="/pypi/packages/ab/cd/ef01/demo-1.0-py3-none-any.whl",
    status=200,
    bytes_sent=1234567,
    duration_s=0.0429,
    client_ip="1.2.3.4",
    user_agent="pip/24.0",
    referer="",
    proxied=False,
    time=NEW_YEAR_2026 + 0.75,
)

# The regex a log parser would use for the combined format.
COMBINED_RE = re.compile(
    r'(?P<ip>\S*) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>.*) HTTP/1\.1" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)"'
)


def entry(**changes: object) -> AccessEntry:
    return dataclasses.replace(ENTRY, **changes)  # type: ignore[arg-type]


@pytest.fixture
def local_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Switch the process's local time zone (POSIX TZ syntax) for one test."""

    def switch(tz: str) -> None:
        monkeypatch.setenv("TZ", tz)
        time.tzset()

    yield switch
    monkeypatch.undo()
    time.tzset()


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def read_lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").splitlines() if path.exists() else []


# --- mirror-json ---------------------------------------------------------------------------


def test_mirror_json_is_the_seed_example_byte_for_byte() -> None:
    assert format_mirror_json(ENTRY) == (
        '{"time":"2026-01-01T00:00:00Z","method":"GET",'
        '"path":"/pypi/packages/ab/cd/ef01/demo-1.0-py3-none-any.whl","status":200,"bytes":1234567,'
        '"duration_ms":42,"client_ip":"1.2.3.4","user_agent":"pip/24.0","referer":"","proxied":"0"}'
    )


def test_mirror_json_keys_are_in_seed_order_with_seed_types() -> None:
    pairs = json.loads(format_mirror_json(entry(proxied=True)), object_pairs_hook=list)
    assert [key for key, _ in pairs] == [
        "time",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "client_ip",
        "user_agent",
        "referer",
        "proxied",
    ]
    assert [type(value) for _, value in pairs] == [str, str, str, int, int, int, str, str, str, str]
    assert dict(pairs)["proxied"] == "1"


@pytest.mark.parametrize(
    ("changes", "key", "expected_json"),
    [
        ({"duration_s": 0.0009}, "duration_ms", "0"),
        ({"duration_s": 1.9999}, "duration_ms", "1999"),
        ({"time": NEW_YEAR_2026 - 0.001}, "time", '"2025-12-31T23:59:59Z"'),
        ({"time": NEW_YEAR_2026 + 86400 * 59 + 3723}, "time", '"2026-03-01T01:02:03Z"'),
        ({"client_ip": ""}, "client_ip", '""'),
        ({"client_ip": "2001:db8::1"}, "client_ip", '"2001:db8::1"'),
        ({"user_agent": "<a>&b"}, "user_agent", r'"\u003ca\u003e\u0026b"'),
        ({"user_agent": 'say "hi" \\ bye'}, "user_agent", r'"say \"hi\" \\ bye"'),
        ({"user_agent": "a\nb\rc\td\x00e\x1f"}, "user_agent", r'"a\nb\rc\td\u0000e\u001f"'),
        ({"user_agent": "line\u2028para\u2029"}, "user_agent", r'"line\u2028para\u2029"'),
        ({"path": "/pypi/ab/cd/ef/naïve-1.0.tar.gz"}, "path", '"/pypi/ab/cd/ef/naïve-1.0.tar.gz"'),
        ({"path": "/pypi/\udcff\udcfe"}, "path", '"/pypi/\ufffd\ufffd"'),
        ({"referer": "http://example.org/\ud83d"}, "referer", '"http://example.org/\ufffd"'),
    ],
)
def test_mirror_json_values_are_escaped_like_go(
    changes: dict[str, object], key: str, expected_json: str
) -> None:
    line = format_mirror_json(entry(**changes))
    assert f'"{key}":{expected_json}' in line
    line.encode("utf-8")  # always encodable
    assert "\n" not in line and "\r" not in line


# --- combined ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "stamp"),
    [
        ("UTC0", "01/Jan/2026:00:00:00 +0000"),
        ("IST-5:30", "01/Jan/2026:05:30:00 +0530"),
        ("EST+5", "31/Dec/2025:19:00:00 -0500"),
    ],
)
def test_combined_line_has_the_seed_shape_in_local_time(
    local_tz: Callable[[str], None], tz: str, stamp: str
) -> None:
    local_tz(tz)
    assert format_combined(ENTRY) == (
        f'1.2.3.4 - - [{stamp}] "GET /pypi/packages/ab/cd/ef01/demo-1.0-py3-none-any.whl HTTP/1.1" '
        '200 1234567 "" "pip/24.0"'
    )


def test_combined_month_names_are_english_whatever_the_locale(local_tz: Callable[[str], None]) -> None:
    local_tz("UTC0")
    months = [format_combined(entry(time=NEW_YEAR_2026 + 86400 * 31 * n))[16:19] for n in range(12)]
    assert months == ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"user_agent": 'evil" 200 0 "x'}, "ua", r"evil\x22 200 0 \x22x"),
        ({"user_agent": "back\\slash"}, "ua", r"back\x5Cslash"),
        ({"user_agent": "a\r\nb\tc\x7f"}, "ua", r"a\x0D\x0Ab\x09c\x7F"),
        ({"referer": 'http://example.org/"q"'}, "referer", r"http://example.org/\x22q\x22"),
        ({"path": "/pypi/x y\n200"}, "path", r"/pypi/x y\x0A200"),
        ({"path": "/pypi/naïve"}, "path", r"/pypi/na\xC3\xAFve"),
        ({"path": "/pypi/\udcff"}, "path", r"/pypi/\xEF\xBF\xBD"),
        ({"method": 'G"T'}, "method", r"G\x22T"),
        ({"client_ip": ""}, "ip", ""),
    ],
)
def test_combined_fields_are_escaped_like_nginx_and_still_parse(
    changes: dict[str, object], field: str, expected: str
) -> None:
    line = format_combined(entry(**changes))
    assert line.isascii() and "\n" not in line and "\r" not in line
    match = COMBINED_RE.fullmatch(line)
    assert match is not None, line
    assert match[field] == expected
    assert (match["status"], match["bytes"]) == ("200", "1234567")


# --- the file ------------------------------------------------------------------------------


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "nested" / "access.log"


def test_start_creates_the_directory_and_a_0644_file(log_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        log = AccessLog(log_path, "mirror-json")
        log.start()
        log.close()
    finally:
        os.umask(old_umask)
    assert log_path.exists() and log_path.stat().st_mode & 0o777 == 0o644
    assert log_path.parent.stat().st_mode & 0o777 == 0o755


def test_start_on_an_unopenable_path_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "access.log").mkdir()
    log = AccessLog(tmp_path / "access.log", "combined")
    with pytest.raises(StorageError) as info:
        log.start()
    assert str(info.value) == f"cannot open access log '{tmp_path / 'access.log'}': Is a directory"


def test_start_appends_to_an_existing_file(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_text("earlier line\n")
    log = AccessLog(log_path, "mirror-json")
    log.start()
    log.write(ENTRY)
    log.close()
    assert read_lines(log_path) == ["earlier line", format_mirror_json(ENTRY)]


def test_lines_reach_the_disk_within_the_flush_interval(log_path: Path) -> None:
    log = AccessLog(log_path, "mirror-json")
    log.start()
    try:
        log.write(ENTRY)
        assert read_lines(log_path) == []  # write() itself never touches the file
        started = time.monotonic()
        wait_for(lambda: len(read_lines(log_path)) == 1, timeout=1.5)
        assert time.monotonic() - started < 1.5
    finally:
        log.close()


@pytest.mark.parametrize("fmt", ["mirror-json", "combined"])
def test_every_request_is_exactly_one_line_whatever_the_client_sends(log_path: Path, fmt: str) -> None:
    hostile = [
        entry(user_agent="pip\nGET /fake HTTP/1.1\r\n"),
        entry(path="/pypi/packages/a\rb\nc"),
        entry(referer="x\u2028y\u0085z"),
        entry(user_agent="\udcff\ud800 bytes that are not UTF-8"),
        entry(path='/pypi/"quoted"\\'),
    ]
    log = AccessLog(log_path, fmt)  # type: ignore[arg-type]
    log.start()
    for item in hostile:
        log.write(item)
    log.close()
    data = log_path.read_bytes()
    lines = data.decode("utf-8").split("\n")  # strict: the file is valid UTF-8
    assert lines[-1] == "" and len(lines) == len(hostile) + 1
    for line in lines[:-1]:
        if fmt == "mirror-json":
            assert json.loads(line)["status"] == 200
        else:
            assert COMBINED_RE.fullmatch(line) is not None


def test_close_writes_every_buffered_line_at_once(log_path: Path) -> None:
    log = AccessLog(log_path, "mirror-json", flush_interval=60)
    log.start()
    for n in range(1000):
        log.write(entry(status=200 + n % 5))
    started = time.monotonic()
    log.close()
    assert time.monotonic() - started < 1
    assert len(read_lines(log_path)) == 1000


def test_lines_are_written_when_the_program_ends_without_close(log_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from pypimirror.accesslog import AccessEntry, AccessLog
        log = AccessLog(Path({str(log_path)!r}), "combined", flush_interval=0.1)
        log.start()
        for n in range(3):
            log.write(AccessEntry("GET", f"/pypi/{{n}}", 200, 0, 0.0, "", "", "", False, 0.0))
        """
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", script], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert [line.split('"')[1] for line in read_lines(log_path)] == [
        "GET /pypi/0 HTTP/1.1",
        "GET /pypi/1 HTTP/1.1",
        "GET /pypi/2 HTTP/1.1",
    ]


STDOUT_WRITER = textwrap.dedent(
    """
    import sys
    from pypimirror.accesslog import AccessEntry, AccessLog
    log = AccessLog("-", "mirror-json", flush_interval=0.01)
    log.start()
    for n in range(int(sys.argv[1])):
        log.write(AccessEntry("GET", f"/pypi/{sys.argv[2]}/{n}", 200, 0, 0.0, "", "x" * 300, "", False, 0.0))
    log.close()
    """
)


def test_dash_writes_every_line_to_stdout_in_order() -> None:
    result = subprocess.run([sys.executable, "-P", "-c", STDOUT_WRITER, "500", "a"], check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [f"/pypi/a/{n}" for n in range(500)]


def test_workers_sharing_one_stdout_pipe_never_interleave_their_lines() -> None:
    read_end, write_end = os.pipe()
    writers = [subprocess.Popen([sys.executable, "-P", "-c", STDOUT_WRITER, "3000", name], stdout=write_end)
               for name in ("a", "b", "c", "d")]
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    assert [writer.wait(timeout=60) for writer in writers] == [0] * 4
    paths = [json.loads(line)["path"] for line in output.decode().splitlines()]  # each line is whole
    for name in ("a", "b", "c", "d"):
        assert [path for path in paths if path.startswith(f"/pypi/{name}/")] == [
            f"/pypi/{name}/{n}" for n in range(3000)
        ]


def test_write_after_close_is_ignored(log_path: Path) -> None:
    log = AccessLog(log_path, "mirror-json")
    log.start()
    log.close()
    log.write(ENTRY)
    assert read_lines(log_path) == []


def test_reopen_after_rename_sends_new_lines_to_a_new_file(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pypimirror.accesslog")
    log = AccessLog(log_path, "mirror-json", flush_interval=0.1)
    log.start()
    log.write(entry(status=200))
    wait_for(lambda: len(read_lines(log_path)) == 1, timeout=2)
    log.write(entry(status=201))  # still buffered when the file is renamed
    rotated = log_path.with_name("access.log.1")
    log_path.rename(rotated)
    log.reopen()
    log.write(entry(status=202))
    log.write(entry(status=203))
    wait_for(lambda: len(read_lines(log_path)) == 2, timeout=1.5)
    log.close()
    assert [json.loads(line)["status"] for line in read_lines(rotated)] == [200, 201]
    assert [json.loads(line)["status"] for line in read_lines(log_path)] == [202, 203]
    assert f"reopening access log {log_path}" in [r.getMessage() for r in caplog.records]


def test_failed_reopen_keeps_lines_until_the_path_is_writable_again(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = AccessLog(log_path, "mirror-json", flush_interval=0.1)
    log.start()
    log.write(entry(status=200))
    log_path.rename(log_path.with_name("access.log.1"))
    log_path.mkdir()  # the path cannot be opened as a file now
    log.reopen()
    log.write(entry(status=201))
    wait_for(lambda: any("cannot reopen access log" in r.getMessage() for r in caplog.records), timeout=2)
    time.sleep(0.3)  # a few more failing flushes: logged once, lines kept
    log_path.rmdir()
    wait_for(lambda: len(read_lines(log_path)) == 1, timeout=2)
    log.write(entry(status=202))
    log.close()
    assert [json.loads(line)["status"] for line in read_lines(log_path)] == [201, 202]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"cannot reopen access log '{log_path}': Is a directory; keeping lines in memory, retrying every 0.1s"
    ]
    assert f"access log {log_path} is written again" in [r.getMessage() for r in caplog.records]


def test_close_on_an_unwritable_path_logs_how_many_lines_were_lost(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = AccessLog(log_path, "combined", flush_interval=60)
    log.start()
    log_path.rename(log_path.with_name("access.log.1"))
    log_path.mkdir()
    log.reopen()
    log.write(ENTRY)
    log.write(ENTRY)
    log.close()
    messages = [r.getMessage() for r in caplog.records]
    assert f"access log {log_path} closed with 2 lines not written" in messages


def test_full_buffer_drops_new_lines_and_logs_how_many(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = AccessLog(log_path, "mirror-json", flush_interval=60, max_pending=3)
    log.start()
    for n in range(5):
        log.write(entry(status=200 + n))
    log.close()
    assert [json.loads(line)["status"] for line in read_lines(log_path)] == [200, 201, 202]
    assert "access log buffer full: 2 lines were dropped" in [r.getMessage() for r in caplog.records]


def test_null_access_log_does_nothing(tmp_path: Path) -> None:
    log = NullAccessLog()
    log.start()
    log.write(ENTRY)
    log.reopen()
    log.close()
    assert list(tmp_path.iterdir()) == []
