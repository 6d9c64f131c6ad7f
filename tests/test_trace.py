"""Reading access logs back as a trace: the three formats, and every kind of line left out."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypimirror.accesslog import AccessEntry, format_combined, format_mirror_json
from pypimirror.errors import StorageError
from pypimirror.trace import TraceReader, TraceRequest, TraceStats

NEW_YEAR_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z
WHEEL = "ab/cd/0123456789abcdef/demo-1.0-py3-none-any.whl"
SDIST = "12/34/fedcba9876543210/demo-1.0.tar.gz"
PIP_UA = 'pip/24.0 {"ci":null,"cpu":"x86_64","installer":{"name":"pip","version":"24.0"}}'

ENTRY = AccessEntry(
    method="GET",
    path=f"/pypi/packages/{WHEEL}",
    status=200,
    bytes_sent=1234,
    duration_s=0.01,
    client_ip="192.0.2.7",
    user_agent=PIP_UA,
    referer="",
    proxied=False,
    time=NEW_YEAR_2026,
)


def entry(**changes: object) -> AccessEntry:
    return dataclasses.replace(ENTRY, **changes)  # type: ignore[arg-type]


def nginx(
    request: str,
    *,
    client: str = "192.0.2.7",
    stamp: str = "01/Jan/2026:01:00:00 +0100",
    status: int = 200,
    user_agent: str = "pip/24.0",
) -> str:
    """A line as nginx's ``combined`` log_format writes it (quotes inside fields as \\x22)."""
    escaped = user_agent.replace('"', "\\x22")
    return f'{client} - - [{stamp}] "{request}" {status} 512 "-" "{escaped}"'


def write(path: Path, lines: list[str], *, compress: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def read(paths: list[Path], **options: object) -> tuple[list[TraceRequest], TraceStats]:
    reader = TraceReader(paths, **options)  # type: ignore[arg-type]
    requests = list(reader)
    stats = reader.stats
    assert stats.lines == stats.requests + stats.skipped_lines + stats.out_of_prefix + stats.excluded
    assert stats.requests == len(requests)
    return requests, stats


@pytest.fixture
def berlin_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local zone ahead of UTC, so the mirror's combined lines carry a +0100 offset."""
    monkeypatch.setenv("TZ", "CET-1")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --------------------------------------------------------------------------- the three formats


@pytest.mark.parametrize("fmt", ["auto", "mirror-json"])
def test_mirror_json_lines_become_requests_with_time_client_and_path(tmp_path: Path, fmt: str) -> None:
    log = write(
        tmp_path / "access.log",
        [
            format_mirror_json(entry()),
            format_mirror_json(entry(path=f"/pypi/packages/{SDIST}", client_ip="2001:db8::1", time=NEW_YEAR_2026 + 61)),
        ],
    )
    requests, stats = read([log], log_format=fmt)
    assert requests == [
        TraceRequest(float(NEW_YEAR_2026), "192.0.2.7", WHEEL),
        TraceRequest(float(NEW_YEAR_2026 + 61), "2001:db8::1", SDIST),
    ]
    assert (stats.first_time, stats.last_time) == (NEW_YEAR_2026, NEW_YEAR_2026 + 61)


@pytest.mark.parametrize("fmt", ["auto", "combined"])
def test_the_mirrors_combined_lines_in_local_time_become_utc_requests(
    tmp_path: Path, fmt: str, berlin_time: None
) -> None:
    lines = [format_combined(entry()), format_combined(entry(client_ip="2001:db8::2", time=NEW_YEAR_2026 + 3600))]
    assert "+0100" in lines[0]
    requests, stats = read([write(tmp_path / "access.log", lines)], log_format=fmt)
    assert requests == [
        TraceRequest(float(NEW_YEAR_2026), "192.0.2.7", WHEEL),
        TraceRequest(float(NEW_YEAR_2026 + 3600), "2001:db8::2", WHEEL),
    ]
    assert stats.skipped_lines == 0


def test_the_mirrors_combined_line_with_an_unknown_client_has_an_empty_client(tmp_path: Path) -> None:
    line = format_combined(entry(client_ip=""))
    assert line.startswith(" - - [")
    requests, _ = read([write(tmp_path / "access.log", [line])])
    assert [r.client for r in requests] == [""]


def test_nginx_combined_lines_with_escaped_quotes_query_and_timezone_are_read(tmp_path: Path) -> None:
    lines = [
        nginx(f"GET /pypi/packages/{WHEEL}?download=1 HTTP/1.1", user_agent=PIP_UA),
        nginx(f"GET /pypi/packages/{SDIST} HTTP/2.0", stamp="31/Dec/2025:19:00:00 -0500", client="2001:db8:0:1::9"),
        # Apache escapes a quote as \" (and a backslash as \\) where nginx writes \x22.
        f'198.51.100.1 - frank [01/Jan/2026:00:00:01 +0000] "GET /pypi/packages/{WHEEL} HTTP/1.1" 200 5 '
        '"https://example.org/a \\"b\\"" "uv/0.5 \\"quoted\\" \\\\ end"',
        # The common format: no Referer and no User-Agent.
        f'198.51.100.2 - - [01/Jan/2026:00:00:02 +0000] "GET /pypi/packages/{WHEEL} HTTP/1.0" 200 5',
    ]
    requests, stats = read([write(tmp_path / "nginx.log", lines)])
    assert requests == [
        TraceRequest(float(NEW_YEAR_2026), "192.0.2.7", WHEEL),
        TraceRequest(float(NEW_YEAR_2026), "2001:db8:0:1::9", SDIST),
        TraceRequest(float(NEW_YEAR_2026 + 1), "198.51.100.1", WHEEL),
        TraceRequest(float(NEW_YEAR_2026 + 2), "198.51.100.2", WHEEL),
    ]
    assert stats == TraceStats(4, 4, 0, 0, 0, float(NEW_YEAR_2026), float(NEW_YEAR_2026 + 2))


def test_fields_a_site_appends_after_the_user_agent_are_ignored(tmp_path: Path) -> None:
    lines = [
        # nginx's "main" format: combined plus "$http_x_forwarded_for".
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1") + ' "203.0.113.9"',
        f'198.51.100.1 - - [01/Jan/2026:00:00:01 +0000] "GET /pypi/packages/{SDIST} HTTP/1.1" 200 5 '
        '"-" "uv \\"x\\"" "203.0.113.9" 0.004',
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1") + '"glued"',  # no separator: not this format
    ]
    requests, stats = read([write(tmp_path / "main.log", lines)])
    assert [r.path for r in requests] == [WHEEL, SDIST]
    assert stats.skipped_lines == 1


def test_percent_encoded_and_escaped_paths_are_decoded_as_the_server_decodes_them(tmp_path: Path) -> None:
    local = "ab/cd/0123456789abcdef/demo-1.0+local-py3-none-any.whl"
    accented = "ab/cd/0123456789abcdef/d\u00e9mo-1.0.tar.gz"
    lines = [
        nginx("GET /pypi/packages/ab/cd/0123456789abcdef/demo-1.0%2Blocal-py3-none-any.whl HTTP/1.1"),
        nginx("GET /pypi/packages/ab/cd/0123456789abcdef/d%C3%A9mo-1.0.tar.gz HTTP/1.1"),
        # A client that sent raw UTF-8: nginx escapes each byte.
        nginx("GET /pypi/packages/ab/cd/0123456789abcdef/d\\xC3\\xA9mo-1.0.tar.gz HTTP/1.1"),
        # The mirror logs the decoded path; its combined line escapes the bytes the same way.
        format_combined(entry(path=f"/pypi/packages/{accented}")),
        format_combined(entry(path=f"/pypi/packages/{local}")),
        # An absolute-form target, as a forward proxy logs it.
        nginx(f"GET http://mirror.example.org/pypi/packages/{WHEEL} HTTP/1.1"),
    ]
    requests, _ = read([write(tmp_path / "access.log", lines)], log_format="combined")
    assert [r.path for r in requests] == [local, accented, accented, accented, local, WHEEL]


def test_the_mirrors_json_paths_are_decoded_once_not_twice(tmp_path: Path) -> None:
    accented = "ab/cd/0123456789abcdef/d\u00e9mo-1.0.tar.gz"
    lines = [
        format_mirror_json(entry(path=f"/pypi/packages/{accented}")),
        # The server decoded %2541 to %41; reading %41 as an escape again would invent a file.
        format_mirror_json(entry(path="/pypi/packages/ab/cd/0123456789abcdef/demo%41-1.0.tar.gz")),
    ]
    requests, stats = read([write(tmp_path / "access.log", lines)])
    assert [r.path for r in requests] == [accented]
    assert stats.out_of_prefix == 1


def test_mirror_json_in_another_key_order_is_still_read(tmp_path: Path) -> None:
    line = (
        '{"status":206,"path":"/pypi/packages/' + WHEEL + '","method":"GET","time":"2026-01-01T00:00:05Z",'
        '"client_ip":"192.0.2.9","user_agent":"pip/\\u0032\\"x\\""}'
    )
    requests, _ = read([write(tmp_path / "access.log", [line])])
    assert requests == [TraceRequest(float(NEW_YEAR_2026 + 5), "192.0.2.9", WHEEL)]


# --------------------------------------------------------------------------- lines left out


def test_malformed_lines_are_counted_and_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    good = format_mirror_json(entry())
    lines = [
        good,
        "",
        "not a log line at all",
        '{"time":"2026-01-01T00:00:00Z","method":"GET"',  # cut short
        format_mirror_json(entry()).replace('"status":200', '"status":"200"'),
        format_mirror_json(entry()).replace("2026-01-01T00:00:00Z", "yesterday"),
        "[1, 2, 3]",
        format_mirror_json(entry(user_agent="pip/24")).replace("pip/24", "pip\\q"),  # a bad escape
        format_mirror_json(entry(user_agent="pip/24")).replace("pip/24", 'pip"24'),  # a bare quote
        good,
        # Whatever a User-Agent holds, escaped, cannot be taken for the fields after it.
        format_mirror_json(entry(user_agent='x","referer":"y","proxied":"0"}', time=NEW_YEAR_2026 + 1)),
    ]
    requests, stats = read([write(tmp_path / "access.log", lines)], log_format="mirror-json")
    assert [r.time for r in requests] == [NEW_YEAR_2026, NEW_YEAR_2026, NEW_YEAR_2026 + 1]
    assert (stats.lines, stats.skipped_lines) == (11, 8)


def test_the_first_malformed_lines_are_logged_with_file_and_line_then_a_count_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1")
    first = write(tmp_path / "first.log", [good, "garbage one", good])
    second = write(tmp_path / "second.log", [f"garbage {n}" for n in range(2, 9)] + [good])
    with caplog.at_level(logging.WARNING, logger="pypimirror.trace"):
        _, stats = read([first, second], log_format="combined")
    assert stats.skipped_lines == 8
    shown = [r.getMessage() for r in caplog.records if "does not parse" in r.getMessage()]
    assert shown[0] == f"{first}: line 2 does not parse, skipped: 'garbage one\\n'"
    assert shown[1].startswith(f"{second}: line 1 does not parse")
    assert len(shown) == 5
    assert f"{first}: 1 of 3 lines did not parse and were skipped" in caplog.text
    assert f"{second}: 7 of 8 lines did not parse and were skipped" in caplog.text


def test_malformed_combined_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    lines = [
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1"),
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", stamp="01/Foo/2026:00:00:00 +0000"),
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", stamp="32/Jan/2026:00:00:00 +0000"),
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", stamp="01/Jan/2026:25:00:00 +0000"),
        f'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /pypi/packages/{WHEEL} HTTP/1.1" 200',  # no size
        f'192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /pypi/packages/{WHEEL} HTTP/1.1 200 5 "-" "-"',
        format_mirror_json(entry()),  # the other format, in a combined file
        nginx(f"GET /pypi/packages/{SDIST} HTTP/1.1"),
    ]
    requests, stats = read([write(tmp_path / "access.log", lines)], log_format="combined")
    assert [r.path for r in requests] == [WHEEL, SDIST]
    assert stats.skipped_lines == 6


def test_seconds_are_read_and_checked_in_every_line_of_a_remembered_minute(tmp_path: Path) -> None:
    # The start of a minute is remembered, with its zone: each line's seconds still count and are checked.
    stamps = [
        "01/Jan/2026:01:00:61 +0100",  # no such second: skipped, but its minute is valid
        "01/Jan/2026:01:00:59 +0100",
        "01/Jan/2026:01:00:60 +0100",  # a leap second
        "01/Jan/2026:01:00:30 +0000",  # the same minute in another zone
        "01/Jan/2026:01:60:00 +0100",  # no such minute
        "01/Jan/2026:01:60:01 +0100",  # ... remembered as such
        "01/Jan/2026:01:01:00 +0100",
    ]
    lines = [nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", stamp=stamp) for stamp in stamps]
    requests, stats = read([write(tmp_path / "access.log", lines)], log_format="combined")
    assert [r.time - NEW_YEAR_2026 for r in requests] == [59, 60, 3630, 60]
    assert stats.skipped_lines == 3


def test_lines_outside_the_prefix_or_not_package_paths_are_out_of_prefix(tmp_path: Path) -> None:
    lines = [
        nginx("GET /pypi/simple/demo/ HTTP/1.1"),
        nginx(f"GET /other/packages/{WHEEL} HTTP/1.1"),
        nginx(f"GET /pypi/packagesx/{WHEEL} HTTP/1.1"),
        nginx("GET /pypi/packages/ab/cd/../../etc/passwd HTTP/1.1"),
        nginx("GET /pypi/packages/ab/cd/0123456789abcdef%2Fdemo-1.0.tar.gz HTTP/1.1"),
        nginx("GET /pypi/packages/AB/cd/0123456789abcdef/demo-1.0.tar.gz HTTP/1.1"),
        nginx("-", status=400),  # nginx's line for a connection that sent no request
        nginx("\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01", status=400),  # TLS spoken to a plain port
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1"),
    ]
    requests, stats = read([write(tmp_path / "access.log", lines)])
    assert [r.path for r in requests] == [WHEEL]
    assert (stats.out_of_prefix, stats.skipped_lines, stats.excluded) == (8, 0, 0)


def test_repeated_paths_read_the_same_when_their_checks_are_remembered_or_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache of two raw paths, cleared when full: every line must still read as it would alone.
    monkeypatch.setattr("pypimirror.trace._RELPATHS_CACHED", 2)
    bad = "GET /pypi/packages/ab/cd/../../etc/passwd HTTP/1.1"
    order = [WHEEL, SDIST, WHEEL, "bad", SDIST, "bad", WHEEL, f"{WHEEL}?x=1", f"{WHEEL}?x=1"]
    lines = [nginx(bad) if p == "bad" else nginx(f"GET /pypi/packages/{p} HTTP/1.1") for p in order]
    requests, stats = read([write(tmp_path / "access.log", lines)])
    assert [r.path for r in requests] == [WHEEL, SDIST, WHEEL, SDIST, WHEEL, WHEEL, WHEEL]
    assert stats.out_of_prefix == 2


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(nginx(f"HEAD /pypi/packages/{WHEEL} HTTP/1.1"), id="head"),
        pytest.param(nginx(f"POST /pypi/packages/{WHEEL} HTTP/1.1"), id="post"),
        pytest.param(nginx(f"GET /pypi/packages/{WHEEL}.metadata HTTP/1.1"), id="metadata"),
        pytest.param(nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", status=404), id="404"),
        pytest.param(nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", status=502), id="502"),
        pytest.param(nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", status=499), id="499-client-gave-up"),
        pytest.param(nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", user_agent="Mozilla/5.0 (Googlebot/2.1)"), id="bot"),
        pytest.param(format_mirror_json(entry(user_agent="AhrefsBot/7.0")), id="bot-json"),
        pytest.param(format_mirror_json(entry(method="HEAD")), id="head-json"),
    ],
)
def test_requests_that_are_not_downloads_are_excluded(tmp_path: Path, line: str) -> None:
    requests, stats = read([write(tmp_path / "access.log", [line])], bots=["googlebot", "ahrefs"])
    assert requests == []
    assert (stats.excluded, stats.lines) == (1, 1)


@pytest.mark.parametrize("status", [200, 206, 302, 304])
def test_served_redirected_partial_and_unchanged_answers_count_as_requests(tmp_path: Path, status: int) -> None:
    requests, _ = read([write(tmp_path / "access.log", [nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", status=status)])])
    assert len(requests) == 1


def test_bots_match_case_insensitively_inside_the_user_agent_and_empty_names_match_nothing(tmp_path: Path) -> None:
    lines = [
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", user_agent="Some-CRAWLER/1.0"),
        nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1", user_agent="pip/24.0"),
    ]
    requests, stats = read([write(tmp_path / "access.log", lines)], bots=["crawler", ""])
    assert len(requests) == 1
    assert stats.excluded == 1


@pytest.mark.parametrize(
    ("prefix", "request_path"),
    [
        ("/mirror/pypi", f"/mirror/pypi/packages/{WHEEL}"),
        ("/mirror/pypi/", f"/mirror/pypi/packages/{WHEEL}"),
        ("", f"/packages/{WHEEL}"),
    ],
)
def test_a_custom_path_prefix_selects_its_packages(tmp_path: Path, prefix: str, request_path: str) -> None:
    lines = [nginx(f"GET {request_path} HTTP/1.1"), nginx(f"GET /pypi/packages/{SDIST} HTTP/1.1")]
    requests, stats = read([write(tmp_path / "access.log", lines)], path_prefix=prefix)
    assert [r.path for r in requests] == [WHEEL]
    assert stats.out_of_prefix == 1


# --------------------------------------------------------------------------- files


def test_gzipped_files_are_recognised_by_their_bytes_not_their_name(tmp_path: Path) -> None:
    plain = write(tmp_path / "access.log.gz", [nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1")])
    packed = write(tmp_path / "access.log.1", [format_mirror_json(entry(time=NEW_YEAR_2026 + 9))], compress=True)
    requests, stats = read([plain, packed])
    assert [(r.time, r.path) for r in requests] == [(NEW_YEAR_2026, WHEEL), (NEW_YEAR_2026 + 9, WHEEL)]
    assert stats.skipped_lines == 0


def test_auto_detects_each_files_format_from_its_first_parseable_line(tmp_path: Path) -> None:
    combined = write(
        tmp_path / "nginx.log",
        ["garbage before the first good line", nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1"), format_mirror_json(entry())],
    )
    mirror = write(tmp_path / "mirror.log", [format_mirror_json(entry(time=NEW_YEAR_2026 + 5)), nginx("GET / HTTP/1.1")])
    requests, stats = read([combined, mirror])
    assert [r.time for r in requests] == [NEW_YEAR_2026, NEW_YEAR_2026 + 5]
    # The garbage, the JSON line in the combined file and the combined line in the JSON file.
    assert stats.skipped_lines == 3


def test_a_file_that_cannot_be_opened_is_an_error_naming_it(tmp_path: Path) -> None:
    good = write(tmp_path / "a.log", [nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1")])
    reader = TraceReader([good, tmp_path / "missing.log"])
    iterator = iter(reader)
    assert next(iterator).path == WHEEL
    with pytest.raises(StorageError, match="missing.log"):
        next(iterator)
    assert reader.stats.requests == 1


def test_a_truncated_gzip_file_is_an_error_naming_it_and_the_line(tmp_path: Path) -> None:
    lines = [nginx(f"GET /pypi/packages/{WHEEL} HTTP/1.1")] * 2000
    packed = gzip.compress("".join(line + "\n" for line in lines).encode())
    log = tmp_path / "access.log.gz"
    log.write_bytes(packed[: len(packed) // 2])
    reader = TraceReader([log])
    with pytest.raises(StorageError, match=r"access\.log\.gz.* after \d+ lines"):
        list(reader)
    assert 0 < reader.stats.requests < 2000


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'apache'"):
        TraceReader([], log_format="apache")
