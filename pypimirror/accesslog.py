"""The access log: one line per request, formatted on the IOLoop, written to disk by a thread.

``mirror-json`` (one JSON object a line) and ``combined`` (nginx's and Apache's) are the formats
the mirror we replace wrote, so existing log tooling keeps working. Whatever a
client controls (method, path, User-Agent, Referer) is escaped, so one request is always exactly
one line, and a line is always valid UTF-8. :meth:`AccessLog.write` only formats and appends to
a list; a flusher thread writes that list to the file every ``flush_interval`` (1 s). The file
can be renamed away and reopened (SIGUSR1, logrotate); a line is never lost to a closed or
failing file while memory allows: it stays buffered (up to ``max_pending`` lines) until a write
succeeds. The path ``-`` is the process's stdout (in a container the runtime collects it); it is
written in whole lines of at most ``PIPE_BUF`` bytes per write, so the lines of several worker
processes sharing one pipe never interleave (a longer line is written, and may interleave, alone).
"""

from __future__ import annotations

__all__ = ["AccessEntry", "AccessLog", "NullAccessLog", "format_combined", "format_mirror_json"]

import functools
import json
import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pypimirror.config import LOG_TO_STDOUT, LogFormat
from pypimirror.errors import StorageError

logger = logging.getLogger(__name__)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Go's json.Marshal escapes these for HTML safety; Python's json leaves them as they are.
_GO_JSON_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"))
_GO_JSON_SEPARATORS = (("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
# nginx's escaping of log variables: '"', '\' and every byte outside printable ASCII as \xHH.
# The quote and backslash (frequent: pip's User-Agent is JSON) go through str.replace, the rest
# (rare) through this pattern, over the text's UTF-8 bytes seen as Latin-1 characters.
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\xff]")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One finished request, as the handler saw it; ``time`` is the Unix time at its end.

    ``path`` is the decoded path without the query; ``client_ip`` is "" when unknown.
    """

    method: str
    path: str
    status: int
    bytes_sent: int
    duration_s: float
    client_ip: str
    user_agent: str
    referer: str
    proxied: bool
    time: float


# --------------------------------------------------------------------------- formats


def format_mirror_json(entry: AccessEntry) -> str:
    """The entry as the seed's compact JSON object, keys in its order, without the newline.

    The bytes match Go's ``json.Marshal``: ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as
    ``\\u003c``..., and text that is not valid Unicode (lone surrogates, e.g. from bytes decoded
    with ``surrogateescape``) replaced by U+FFFD. ``time`` is UTC to the second, ``duration_ms``
    is truncated, ``proxied`` is the string "1" or "0".
    """
    fields = {
        "time": _utc_stamp(int(entry.time)),
        "method": _valid_unicode(entry.method),
        "path": _valid_unicode(entry.path),
        "status": entry.status,
        "bytes": entry.bytes_sent,
        "duration_ms": int(entry.duration_s * 1000),
        "client_ip": _valid_unicode(entry.client_ip),
        "user_agent": _valid_unicode(entry.user_agent),
        "referer": _valid_unicode(entry.referer),
        "proxied": "1" if entry.proxied else "0",
    }
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in _GO_JSON_ESCAPES:
        text = text.replace(raw, escaped)
    if not text.isascii():
        for raw, escaped in _GO_JSON_SEPARATORS:
            text = text.replace(raw, escaped)
    return text


def format_combined(entry: AccessEntry) -> str:
    """The entry in the seed's NCSA combined format, without the newline.

    Unlike the seed, method, path, Referer and User-Agent are escaped as nginx does: ``"``,
    ``\\``, control characters and every byte of a non-ASCII character (in UTF-8) become
    ``\\xHH``, so the line is plain ASCII and its quoted fields always parse. As in the seed, the
    protocol is always ``HTTP/1.1``, the time is local with its ``±hhmm`` offset, an unknown
    client IP is an empty field (the line then starts with a space) and an empty Referer is ``""``.
    """
    return (
        f"{_escape_nginx(entry.client_ip)} - - [{_local_stamp(int(entry.time))}] "
        f'"{_escape_nginx(entry.method)} {_escape_nginx(entry.path)} HTTP/1.1" '
        f'{entry.status} {entry.bytes_sent} "{_escape_nginx(entry.referer)}" '
        f'"{_escape_nginx(entry.user_agent)}"'
    )


_FORMATTERS: dict[LogFormat, Callable[[AccessEntry], str]] = {
    "mirror-json": format_mirror_json,
    "combined": format_combined,
}


def _valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate (not encodable as UTF-8) replaced by U+FFFD."""
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


def _escape_nginx(text: str) -> str:
    if not text.isascii():
        text = _valid_unicode(text).encode("utf-8").decode("latin-1")
    text = text.replace("\\", "\\x5C").replace('"', "\\x22")
    return _UNPRINTABLE_RE.sub(_hex_escape, text)


def _hex_escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02X}"


@functools.lru_cache(maxsize=4)
def _utc_stamp(second: int) -> str:
    """RFC 3339 in UTC, e.g. ``2026-01-01T00:00:00Z``; cached, as a busy second has many lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _local_stamp(second: int) -> str:
    """``01/Jan/2026:00:00:00 +0100`` in local time; month names never follow the locale.

    Not cached: the local offset depends on TZ, which a test (or an operator) may change.
    """
    local = time.localtime(second)
    offset_min = local.tm_gmtoff // 60
    sign = "-" if offset_min < 0 else "+"
    hours, minutes = divmod(abs(offset_min), 60)
    return (
        f"{local.tm_mday:02d}/{_MONTHS[local.tm_mon - 1]}/{local.tm_year}:"
        f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )


# --------------------------------------------------------------------------- the file


class AccessLog:
    """Lines buffered in memory and appended to ``path`` by a flusher thread.

    Only the flusher thread touches the file. :meth:`write` and :meth:`reopen` take a re-entrant
    lock for an append, so both are safe on the IOLoop and even inside a signal handler that
    interrupts a :meth:`write`. A write after :meth:`close` is ignored.
    """

    def __init__(
        self, path: Path | Literal["-"], fmt: LogFormat, *, flush_interval: float = 1.0, max_pending: int = 100_000
    ) -> None:
        self.path = path
        self._format = _FORMATTERS[fmt]
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._lock = threading.RLock()
        self._pending: list[str | None] = []  # lines; None marks where reopen() was called
        self._closed = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Owned by the flusher thread (or by close() when the log was never started).
        self._fd: int | None = None
        self._unwritten = b""
        self._failing = False
        self._lost = 0  # lines refused because the buffer was full

    def start(self) -> None:
        """Open the file (creating its directory) and start the flusher.

        Raises StorageError when the file cannot be opened: a log that cannot be written at
        start-up is a configuration mistake.
        """
        if self._thread is not None:
            raise RuntimeError("the access log is already started")
        try:
            self._fd = self._open()
        except OSError as exc:
            raise StorageError(f"cannot open access log {str(self.path)!r}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._run, name="pypimirror-accesslog", daemon=False)
        self._thread.start()

    def write(self, entry: AccessEntry) -> None:
        """Format ``entry`` and queue its line; no disk I/O happens here."""
        line = self._format(entry) + "\n"
        with self._lock:
            if self._closed:
                return
            if len(self._pending) >= self._max_pending:
                self._lost += 1
                return
            self._pending.append(line)

    def reopen(self) -> None:
        """Ask for the file to be reopened (SIGUSR1, after logrotate renamed it); never raises.

        Lines written before this call go to the old file, later lines to the new one. The
        flusher does the work at its next tick; a failed reopen is logged and retried there.
        """
        with self._lock:
            self._pending.append(None)

    def close(self) -> None:
        """Write every buffered line, stop the flusher and close the file."""
        with self._lock:
            self._closed = True
        if self._thread is None:
            self._finish()
            return
        self._wake.set()
        self._thread.join()

    # --- the flusher thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed and threading.main_thread().is_alive():
            self._wake.wait(self._flush_interval)
            self._flush()
        self._finish()

    def _finish(self) -> None:
        """The last flush (it also takes the lines written while the previous one ran), then close."""
        self._flush()
        self._close_file()
        unwritten = sum(1 for item in self._pending if item is not None) + self._unwritten.count(b"\n")
        if unwritten:
            logger.error("access log %s closed with %d lines not written", self.path, unwritten)

    def _flush(self) -> None:
        """Write the buffered lines, reopening the file where reopen() asked for it."""
        if self._unwritten and not self._write_out():
            return  # still failing: newer lines wait in memory, so the backlog stays bounded
        with self._lock:
            items, self._pending = self._pending, []
            lost, self._lost = self._lost, 0
        if lost:
            logger.error("access log buffer full: %d lines were dropped", lost)
        chunk: list[str] = []
        for item in items:
            if item is None:
                self._write_lines(chunk)
                chunk = []
                self._reopen_file()
            else:
                chunk.append(item)
        self._write_lines(chunk)

    def _write_lines(self, lines: list[str]) -> None:
        if lines:
            self._unwritten += "".join(lines).encode("utf-8")
            self._write_out()

    def _write_out(self) -> bool:
        """Write ``_unwritten`` to the file (opening it if needed); False if that failed."""
        data = memoryview(self._unwritten)
        done = 0
        try:
            if self._fd is None:
                self._fd = self._open()
            while done < len(data):
                done += os.write(self._fd, data[done:self._chunk_end(self._unwritten, done)])
        except OSError as exc:
            self._unwritten = self._unwritten[done:]
            self._report_failure(f"cannot write access log {str(self.path)!r}: {exc.strerror or exc}")
            return False
        finally:
            data.release()
        self._unwritten = b""
        if self._failing:
            logger.warning("access log %s is written again", self.path)
            self._failing = False
        return True

    def _chunk_end(self, data: bytes, start: int) -> int:
        """Where the write from ``start`` ends: the whole rest for a file, whole lines up to
        ``PIPE_BUF`` bytes (or one longer line) for stdout."""
        if self.path != LOG_TO_STDOUT or len(data) - start <= select.PIPE_BUF:
            return len(data)
        end = data.rfind(b"\n", start, start + select.PIPE_BUF)
        if end < 0:
            end = data.find(b"\n", start)
        return len(data) if end < 0 else end + 1

    def _reopen_file(self) -> None:
        logger.info("reopening access log %s", self.path)
        self._close_file()
        try:
            self._fd = self._open()
        except OSError as exc:
            self._report_failure(f"cannot reopen access log {str(self.path)!r}: {exc.strerror or exc}")

    def _open(self) -> int:
        if self.path == LOG_TO_STDOUT:
            return os.dup(sys.stdout.fileno())  # closed and reopened like a file, stdout stays open
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        return os.open(self.path, _OPEN_FLAGS, 0o644)

    def _close_file(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.close(fd)
        except OSError as exc:
            logger.warning("cannot close access log %s: %s", self.path, exc.strerror or exc)

    def _report_failure(self, message: str) -> None:
        """Log the first failure of a run of failures; the lines stay buffered for a retry."""
        if not self._failing:
            logger.error("%s; keeping lines in memory, retrying every %.1fs", message, self._flush_interval)
            self._failing = True


class NullAccessLog:
    """The access log when ``log.path`` is unset: every method does nothing.

    It lets the server handle SIGUSR1 the same way whether or not it logs (seed §13 item 15a:
    an unhandled SIGUSR1 would terminate the process).
    """

    def start(self) -> None:
        """Nothing to open."""

    def write(self, entry: AccessEntry) -> None:
        """The entry is not logged."""

    def reopen(self) -> None:
        """Nothing to reopen."""

    def close(self) -> None:
        """Nothing to flush."""
