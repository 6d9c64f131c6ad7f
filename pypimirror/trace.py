"""Access logs read back as a trace: the package-file downloads clients made, in time order.

An operator replays the logs of a mirror (this one's, or nginx's/Apache's ``combined`` lines of
another) to see what a cache would have served. :class:`TraceReader` yields one
:class:`TraceRequest` per download that would have been a vote on a running mirror, and counts
every other line in :class:`TraceStats` by the reason it was left out; a line it cannot parse
is counted and skipped, never fatal. What counts as a request:

* the line parses (else ``skipped_lines``);
* its path, without the query string, lies under ``{path_prefix}/packages/`` and is a valid
  package path (``ab/cd/<hash>/<filename>``, checked and percent-decoded exactly as the server
  does); anything else is ``out_of_prefix``, including a request line that is not
  ``METHOD TARGET [PROTOCOL]`` (nginx logs TLS noise as such);
* it is a GET of a distribution (not its ``.metadata``), answered with a 2xx or 3xx status, by
  a client whose User-Agent is not a bot: else ``excluded``. A 200, 206, 302 or 304 is a client
  asking for the file, whoever served it; a 4xx or 5xx is a request that got no file (a 404 for
  a file that does not exist, a failure the client retries), and counting it would invent or
  double demand.

The mirror logs the decoded path (and no query), nginx and Apache the raw request target; both
read right, because a valid package path never holds a ``%`` once decoded. Non-ASCII bytes,
escaped by the loggers as ``\\xHH``, are restored and re-encoded before the check.

Files are read in the order given, each assumed in time order; gzip is recognised by its magic
bytes. ``auto`` picks a file's format from its first line that parses in either. Speed matters
(an operator may replay a month, tens of millions of lines): the usual line is split at its
quotes and only short pieces go through a regex (a whole-line regex or ``json.loads`` is the
fallback for unusual lines), User-Agents are unescaped and timestamps converted once per
distinct value, package paths checked once per distinct raw path (up to a bound), and the
checks are ordered so the common line takes the fewest steps.
"""

from __future__ import annotations

__all__ = ["LOG_FORMATS", "TraceReader", "TraceRequest", "TraceStats"]

import calendar
import gzip
import io
import json
import logging
import operator
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Final, cast
from urllib.parse import quote

from pypimirror.bots import BotMatcher
from pypimirror.errors import StorageError, UnsafePathError
from pypimirror.pkgpath import METADATA_SUFFIX, parse_package_path

logger = logging.getLogger(__name__)

#: The values of ``log_format``: ``auto`` detects each file's format.
LOG_FORMATS: Final = ("auto", "mirror-json", "combined")

_GZIP_MAGIC: Final = b"\x1f\x8b"
# %h %l %u [%t] "%r" %>s %b, then optionally "%{Referer}i" "%{User-agent}i" (the common format
# has neither) and, ignored, whatever a site appends (nginx's "main" adds X-Forwarded-For).
# Quoted fields are unrolled loops, which run far faster than an alternation per character;
# they accept nginx's \xHH and Apache's \" and \\ escapes alike.
_QUOTED: Final = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_HEAD: Final = r"(\S*) \S+ \S+ \[(\d\d/[A-Za-z]{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
_COMBINED_RE: Final = re.compile(
    _HEAD + _QUOTED + r" (\d{3}) \S+(?: " + _QUOTED + " " + _QUOTED + r"(?:\s.*)?)?\s*", re.DOTALL
)
# The fast path: a line with no escaped quote splits at its quotes, and only the short pieces
# between the quoted fields need a regex (a quarter of the time of the whole-line regex).
_HEAD_RE: Final = re.compile(_HEAD)
_STATUS_RE: Final = re.compile(r" (\d{3}) \S+ ")
_LAST_STATUS_RE: Final = re.compile(r" (\d{3}) \S+\s*")
# The mirror's own mirror-json line, keys in the order it writes them (see accesslog.py), is
# read without a JSON parser: split at its first 25 quotes (inside a JSON string every quote is
# escaped, so up to the User-Agent each one is a delimiter), then the key after the User-Agent
# is searched from the end and a regex checks the short rest. The User-Agent itself, long and
# full of escaped quotes, is decoded once per distinct value. Anything else goes through json.
_JSON_SPLITS: Final = 25
_JSON_SKELETON: Final = operator.itemgetter(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 15, 17, 19, 20, 22, 23, 24)
_JSON_EXPECTED: Final = (
    "{", "time", ":", ",", "method", ":", ",", "path", ":", ",", "status", "bytes", "duration_ms",
    "client_ip", ":", ",", "user_agent", ":",
)  # fmt: skip
_JSON_NUMBER_RE: Final = re.compile(r":\d+,")
_JSON_REFERER_KEY: Final = '","referer":"'
_JSON_TAIL_RE: Final = re.compile(r'","referer":"[^"\\]*(?:\\.[^"\\]*)*","proxied":"[01]"\}\s*')
_JSON_CONTENT_RE: Final = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*')
# Distinct escaped User-Agents whose decoding is remembered; the cache starts afresh when full.
_DECODED_CACHED: Final = 1024
_ESCAPE_RE: Final = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)
_RFC3339_RE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
_PACKAGES: Final = "/packages/"
# Distinct raw package paths whose check is remembered (popular files are requested again and
# again); the cache starts afresh when full, which bounds its memory to some tens of MB.
_RELPATHS_CACHED: Final = 1 << 17
# Minutes of combined timestamps whose start is remembered (a log goes forward in time, so a
# few suffice; the cache starts afresh when full).
_MINUTES_CACHED: Final = 4096
_UNSEEN_MINUTE: Final = -1  # no minute starts at -1: every start is a multiple of 60
# Malformed lines shown in the log, per reader; the rest are only counted.
_SHOWN_MALFORMED: Final = 5
# Characters quote() must leave alone when re-encoding a decoded path: the separators only, so
# any other character (a decoded '%' included) is encoded once more and then decoded once by
# parse_package_path, exactly as the server decoded the original.
_QUOTE_SAFE: Final = "/"


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One download of a distribution file: when, by whom, and which file.

    ``time`` is POSIX seconds (UTC); ``client`` is the address as logged (IPv4 or IPv6 text,
    "" when the mirror did not know it); ``path`` is the decoded package path relative to the
    packages root, ``ab/cd/<hash>/<filename>``, the key the mirror's votes and pages use.
    """

    time: float
    client: str
    path: str


@dataclass(slots=True)
class TraceStats:
    """What a :class:`TraceReader` read, filled while it is iterated.

    ``lines`` = ``requests`` + ``skipped_lines`` + ``out_of_prefix`` + ``excluded`` (see the
    module docstring for what each means). ``first_time`` and ``last_time`` are the times of
    the first and last yielded request.
    """

    lines: int = 0
    requests: int = 0
    skipped_lines: int = 0
    out_of_prefix: int = 0
    excluded: int = 0
    first_time: float | None = None
    last_time: float | None = None


# One parsed line: (time, client, method, target, status, user agent); a tuple is the cheapest
# thing to build once per line. A parser returns None for a line that does not parse.
_Line = tuple[float, str, str, str, int, str]
_LineParser = Callable[[str], "_Line | None"]


class TraceReader:
    """The package-file requests in access logs, read lazily; iterate once.

    ``paths`` are read in the order given. ``log_format`` is one of :data:`LOG_FORMATS`;
    ``path_prefix`` is the mirror's URL prefix (``""`` for a mirror at the root);
    ``bots`` are User-Agent substrings, as ``votes.bots``. A file that cannot be opened or whose
    compressed stream is corrupt raises :class:`~pypimirror.errors.StorageError` naming it.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        log_format: str = "auto",
        path_prefix: str = "/pypi",
        bots: Sequence[str] = (),
    ) -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        self.paths = tuple(paths)
        self.log_format = log_format
        self.stats = TraceStats()
        self._marker = path_prefix.rstrip("/") + _PACKAGES
        self._is_bot = BotMatcher(bots).is_bot
        self._combined = _CombinedParser()
        self._mirror_json = _MirrorJsonParser()
        self._relpaths: dict[str, str | None] = {}  # raw path after the marker -> its package path

    def __iter__(self) -> Iterator[TraceRequest]:
        for path in self.paths:
            yield from self._read_file(path)

    def _read_file(self, path: Path) -> Iterator[TraceRequest]:
        """The requests of one file; its malformed lines are logged (the first few) and summed up."""
        stats = self.stats
        lines_before, skipped_before = stats.lines, stats.skipped_lines
        try:
            with _open_text(path) as lines:
                yield from self._requests(path, lines)
        except (OSError, EOFError, zlib.error) as exc:
            line = stats.lines - lines_before
            raise StorageError(f"cannot read log {str(path)!r} after {line} lines: {exc}") from exc
        read, skipped = stats.lines - lines_before, stats.skipped_lines - skipped_before
        if skipped:
            logger.warning("%s: %d of %d lines did not parse and were skipped", path, skipped, read)
        logger.debug("read %d lines of %s", read, path)

    def _requests(self, path: Path, lines: IO[str]) -> Iterator[TraceRequest]:
        """The requests of one open file; the hot loop of a replay."""
        stats = self.stats
        candidates = self._candidates()
        # Under auto, the first line one parser reads picks that parser for the rest of the file.
        parse = candidates[0] if len(candidates) == 1 else None
        marker = self._marker
        marker_length = len(marker)
        is_bot = self._is_bot
        relpaths = self._relpaths
        lines_before = stats.lines
        for text in lines:
            stats.lines += 1
            if parse is not None:
                line = parse(text)
            else:
                line = None
                for candidate in candidates:
                    line = candidate(text)
                    if line is not None:
                        parse = candidate
                        break
            if line is None:
                stats.skipped_lines += 1
                if stats.skipped_lines <= _SHOWN_MALFORMED:
                    number = stats.lines - lines_before
                    logger.warning("%s: line %d does not parse, skipped: %.200r", path, number, text)
                continue
            time, client, method, target, status, user_agent = line
            if not target.startswith(marker):
                target = _origin_form(target)
                if not target.startswith(marker):
                    stats.out_of_prefix += 1
                    continue
            raw = target[marker_length:]
            try:
                relpath = relpaths[raw]
            except KeyError:
                relpath = _package_relpath(raw)
                if len(relpaths) >= _RELPATHS_CACHED:
                    relpaths.clear()
                relpaths[raw] = relpath
            if relpath is None:
                stats.out_of_prefix += 1
                continue
            if (
                method != "GET"
                or not 200 <= status < 400
                or relpath.endswith(METADATA_SUFFIX)
                or (user_agent and is_bot(user_agent))
            ):
                stats.excluded += 1
                continue
            stats.requests += 1
            if stats.first_time is None:
                stats.first_time = time
            stats.last_time = time
            yield TraceRequest(time, client, relpath)

    def _candidates(self) -> tuple[_LineParser, ...]:
        """The parsers a file's lines may be in: the chosen format's, or (auto) both."""
        if self.log_format == "combined":
            return (self._combined.parse,)
        if self.log_format == "mirror-json":
            return (self._mirror_json.parse,)
        return (self._mirror_json.parse, self._combined.parse)


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    """``path`` as text lines, through gzip when it starts with gzip's magic bytes.

    Bytes that are not UTF-8 are kept as surrogates: such a line still parses, and a path
    holding one is refused by the package path check rather than crashing the replay.
    """
    with open(path, "rb") as raw:
        binary: IO[bytes] = raw
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw))
        with io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="\n") as text:
            yield text


def _origin_form(target: str) -> str:
    """The path of an absolute-form target (``http://host/path``), as a proxy may log it."""
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        return target[slash:] if slash != -1 else "/"
    return target


def _package_relpath(raw: str) -> str | None:
    """The decoded package path of ``raw`` (after ``/packages/``), or None if the server refuses it."""
    query = raw.find("?")
    if query != -1:
        raw = raw[:query]
    if not raw.isascii():
        raw = quote(raw, safe=_QUOTE_SAFE, errors="surrogateescape")
    try:
        return parse_package_path(raw).relpath
    except UnsafePathError:
        return None


def _unescape(text: str) -> str:
    """A logged field with nginx's ``\\xHH`` and Apache's ``\\"``/``\\\\`` escapes undone."""
    restored = _ESCAPE_RE.sub(_unescape_one, text)
    if restored.isascii():
        return restored
    # The escapes stood for bytes (of UTF-8 text, usually); turn them back into characters.
    try:
        data = restored.encode("latin-1", errors="surrogateescape")
    except UnicodeEncodeError:
        return restored  # characters that were never escaped bytes: leave the text as logged
    return data.decode("utf-8", errors="surrogateescape")


def _unescape_one(match: re.Match[str]) -> str:
    escaped = match[1]
    if len(escaped) == 3:
        return chr(int(escaped[1:], 16))
    return escaped


def _split_combined(text: str) -> tuple[str, str, str, str, str | None] | None:
    """(client, time, request, status, User-Agent) of a line without escaped quotes, split at its quotes.

    None sends the line to the full regex (which also decides whether it parses at all).
    """
    parts = text.split('"')
    count = len(parts)
    if count >= 7 and parts[4] == " " and (parts[6][:1].isspace() or (count == 7 and not parts[6])):
        status = _STATUS_RE.fullmatch(parts[2])
        user_agent: str | None = parts[5]
    elif count == 3:
        status = _LAST_STATUS_RE.fullmatch(parts[2])
        user_agent = None
    else:
        return None
    head = _HEAD_RE.fullmatch(parts[0])
    if head is None or status is None:
        return None
    return head[1], head[2], parts[1], status[1], user_agent


class _CombinedParser:
    """NCSA combined lines: nginx's, Apache's and the mirror's own."""

    __slots__ = ("_minutes", "_offsets", "_stamp", "_time", "_unescaped")

    def __init__(self) -> None:
        self._stamp = ""
        self._time = 0.0
        self._unescaped: dict[str, str] = {}  # escaped User-Agent -> its text (they repeat)
        self._offsets: dict[tuple[int, int], int] = {}  # (year, month) -> POSIX time of its 1st
        self._minutes: dict[str, int | None] = {}  # stamp without its seconds -> POSIX time of second 0

    def parse(self, text: str) -> _Line | None:
        fields = _split_combined(text) if '\\"' not in text else None
        if fields is None:
            match = _COMBINED_RE.fullmatch(text)
            if match is None:
                return None
            client, stamp, request, status, _referer, user_agent = match.groups()
        else:
            client, stamp, request, status, user_agent = fields
        if stamp != self._stamp:
            parsed = self._parse_stamp(stamp)
            if parsed is None:
                return None
            self._stamp, self._time = stamp, parsed
        if "\\" in request:
            request = _unescape(request)
        first = request.find(" ")
        last = request.rfind(" ")
        if first <= 0:
            method, target = request, ""  # "-" or noise: no target, so never in the prefix
        elif first == last:
            method, target = request[:first], request[first + 1 :]  # HTTP/0.9 has no protocol
        else:
            method, target = request[:first], request[first + 1 : last]
        if user_agent is None:
            user_agent = ""
        elif "\\" in user_agent:
            user_agent = self._unescape_user_agent(user_agent)
        return (self._time, client, method, target, int(status), user_agent)

    def _unescape_user_agent(self, escaped: str) -> str:
        text = self._unescaped.get(escaped)
        if text is None:
            text = _unescape(escaped)
            if len(self._unescaped) >= _DECODED_CACHED:
                self._unescaped.clear()
            self._unescaped[escaped] = text
        return text

    def _parse_stamp(self, stamp: str) -> float | None:
        """``10/Oct/2000:13:55:36 -0700`` (shape checked by the regex) as POSIX time.

        A sparse log changes its stamp almost every line but its minute far less often: the
        start of each minute (with its zone) is computed once while it is remembered.
        """
        second = int(stamp[18:20])
        minute_key = stamp[:17] + stamp[20:]
        minute_start = self._minutes.get(minute_key, _UNSEEN_MINUTE)
        if minute_start is _UNSEEN_MINUTE:
            minute_start = self._minute_start(stamp)
            if len(self._minutes) >= _MINUTES_CACHED:
                self._minutes.clear()
            self._minutes[minute_key] = minute_start
        if minute_start is None or second > 60:
            return None
        return float(minute_start + second)

    def _minute_start(self, stamp: str) -> int | None:
        """The POSIX time of second 0 of ``stamp``'s minute, None if its date or time is out of range."""
        month = _MONTHS.get(stamp[3:6])
        day, hour, minute = int(stamp[0:2]), int(stamp[12:14]), int(stamp[15:17])
        if month is None or not 1 <= day <= 31 or hour > 23 or minute > 59:
            return None
        year = int(stamp[7:11])
        month_start = self._offsets.get((year, month))
        if month_start is None:
            month_start = calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))
            self._offsets[(year, month)] = month_start
        offset = (int(stamp[22:24]) * 60 + int(stamp[24:26])) * 60
        if stamp[21] == "-":
            offset = -offset
        return month_start + (day - 1) * 86400 + hour * 3600 + minute * 60 - offset


class _MirrorJsonParser:
    """The mirror's ``mirror-json`` lines: one JSON object each, time in RFC 3339.

    The mirror writes its keys in one order, so a regex reads its lines (several times faster
    than ``json.loads``); a line in another shape, still valid JSON, goes through ``json``.
    """

    __slots__ = ("_decoded", "_stamp", "_time")

    def __init__(self) -> None:
        self._stamp = ""
        self._time = 0.0
        self._decoded: dict[str, str] = {}  # escaped JSON string -> its text (User-Agents repeat)

    def parse(self, text: str) -> _Line | None:
        parts = text.split('"', _JSON_SPLITS)
        if len(parts) <= _JSON_SPLITS or _JSON_SKELETON(parts) != _JSON_EXPECTED:
            return self._parse_json(text)  # another key order, or not ours
        stamp, method, path, status, client, rest = parts[3], parts[7], parts[11], parts[14], parts[21], parts[25]
        if (
            "\\" in stamp or "\\" in method or "\\" in path or "\\" in client
            or len(status) != 5 or not status[1:4].isdigit() or status[4] != ","
            or _JSON_NUMBER_RE.fullmatch(parts[16]) is None or _JSON_NUMBER_RE.fullmatch(parts[18]) is None
        ):  # fmt: skip
            return self._parse_json(text)
        end = rest.rfind(_JSON_REFERER_KEY)
        if end == -1 or _JSON_TAIL_RE.fullmatch(rest, end) is None:
            return self._parse_json(text)
        user_agent = rest[:end]
        if "\\" in user_agent or '"' in user_agent:
            decoded = self._decode(user_agent)
            if decoded is None:
                return None
            user_agent = decoded
        return self._line(stamp, client, method, path, int(status[1:4]), user_agent)

    def _parse_json(self, text: str) -> _Line | None:
        if not text.startswith("{"):
            return None
        try:
            fields = json.loads(text)
        except ValueError:
            return None
        if not isinstance(fields, dict):
            return None
        stamp = fields.get("time")
        method = fields.get("method")
        path = fields.get("path")
        status = fields.get("status")
        client = fields.get("client_ip", "")
        user_agent = fields.get("user_agent", "")
        if not (
            isinstance(stamp, str)
            and isinstance(method, str)
            and isinstance(path, str)
            and type(status) is int
            and isinstance(client, str)
            and isinstance(user_agent, str)
        ):
            return None
        return self._line(stamp, client, method, path, status, user_agent)

    def _line(self, stamp: str, client: str, method: str, path: str, status: int, user_agent: str) -> _Line | None:
        if stamp != self._stamp:
            parsed = _parse_rfc3339(stamp)
            if parsed is None:
                return None
            self._stamp, self._time = stamp, parsed
        if "%" in path or "?" in path or " " in path or not path.isascii():
            # The mirror logs decoded paths: encode them again, so they are decoded only once.
            path = quote(path, safe=_QUOTE_SAFE, errors="surrogateescape")
        return (self._time, client, method, path, status, user_agent)

    def _decode(self, escaped: str) -> str | None:
        """A JSON string's content decoded, or None if it is not valid JSON string content."""
        decoded = self._decoded.get(escaped)
        if decoded is None:
            if _JSON_CONTENT_RE.fullmatch(escaped) is None:
                return None
            try:
                decoded = json.loads(f'"{escaped}"')
            except ValueError:  # a bad escape such as \q
                return None
            if len(self._decoded) >= _DECODED_CACHED:
                self._decoded.clear()
            self._decoded[escaped] = decoded
        return decoded


def _parse_rfc3339(stamp: str) -> float | None:
    if _RFC3339_RE.fullmatch(stamp) is None:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
