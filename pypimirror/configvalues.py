"""Parsers for the values of configuration keys: sizes, durations, URLs, networks and the like.

Each parser takes the raw YAML value and returns the typed value, or raises ``ValueError``
with a message that names the bad value (passwords masked); the configuration reader adds
the key path. They are strict: a value that is not exactly what is meant is an error, never
a silent 0. Every value is bounded above as well, so a value that passes here cannot fail
later (an overflow when a job is scheduled, a number the database cannot store, a control
character sent as a header): no text holds control characters, a duration is at most ten
years and a whole number at most 10**9 unless its key sets a tighter bound.
"""

from __future__ import annotations

__all__ = [
    "DurationTooLong",
    "IPMode",
    "IPNetwork",
    "PROXY_SCHEMES",
    "choice_parser",
    "database_url_parser",
    "describe_value",
    "duration_parser",
    "format_duration",
    "int_parser",
    "parse_bool",
    "parse_duration",
    "parse_header_text",
    "parse_http_url",
    "parse_ip_mode",
    "parse_listen",
    "parse_network",
    "parse_positive_duration",
    "parse_prefix",
    "parse_proxy",
    "parse_size",
    "parse_share",
    "parse_text",
]

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeAlias, TypeVar
from urllib.parse import SplitResult, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pypimirror.urlmask import mask_url

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPMode = Literal["302", "proxy"]

_S = TypeVar("_S", bound=str)

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


# --------------------------------------------------------------------------- sizes and durations

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)b?", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_EXAMPLES = "expected e.g. 500g, 1.5 TB, 1048576"
_MAX_SIZE = 2**63 - 1  # what a database INTEGER column holds
_DURATION_RE = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", re.ASCII)
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION_EXAMPLES = "expected e.g. 30s, 5m, 2h, 1h30m, 7d"
# Longer than any key needs, and far from what timedelta, datetime arithmetic (a job's next
# run) and thread joins can hold.
_MAX_DURATION = timedelta(days=3650)
# A whole number's bound when its key gives none: far above any sane count, and far below what
# a database BIGINT holds (a count is compared with sums in SQL).
_MAX_COUNT = 10**9
# The longest text a key may hold (a path on Linux is at most 4095 bytes).
_MAX_TEXT = 4096
# C0 controls, DEL and C1 controls: nothing in a configuration file needs them.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_size(value: object) -> int:
    """Bytes from a size such as ``512g``, ``1.5 TB``, ``100b`` or a plain number.

    Suffixes ``k kb m mb g gb t tb`` (any case) are binary multiples; a fraction of a byte is
    dropped. Raises ``ValueError`` for anything else, including negatives, ``inf`` and ``nan``.
    """
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a size ({_SIZE_EXAMPLES})")
        amount = Decimal(match[1]) * _SIZE_UNITS[match[2].lower()]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a size: it must be 0 or more ({_SIZE_EXAMPLES})")
        amount = Decimal(value)
    else:
        raise ValueError(f"{describe_value(value)} is not a size ({_SIZE_EXAMPLES})")
    if amount > _MAX_SIZE:
        raise ValueError(f"{value!r} is too large a size (at most {_MAX_SIZE} bytes)")
    return int(amount)


class DurationTooLong(ValueError):
    """A well-formed duration above its bound (so a caller trying other grammars can tell)."""


def parse_duration(value: object) -> timedelta:
    """A ``timedelta`` from whole numbers with units, largest first: ``30s``, ``1h30m``, ``7d``.

    Units are ``d h m s`` (lower case: ``M`` could mean months). A bare number has no unit
    and is refused, as is anything else that is not such a duration.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"{value!r} has no unit ({_DURATION_EXAMPLES})")
    if not isinstance(value, str):
        raise ValueError(f"{describe_value(value)} is not a duration ({_DURATION_EXAMPLES})")
    text = value.strip()
    if text.isdecimal():
        raise ValueError(f"{value!r} has no unit ({_DURATION_EXAMPLES})")
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{value!r} is not a duration ({_DURATION_EXAMPLES})")
    counts = [int(group) if group else 0 for group in match.groups()]
    seconds = sum(n * size for n, (_, size) in zip(counts, _DURATION_UNITS, strict=True))
    if seconds > _MAX_DURATION.total_seconds():
        raise DurationTooLong(f"{value!r} is too long (at most {format_duration(_MAX_DURATION)})")
    return timedelta(seconds=seconds)


def duration_parser(maximum: timedelta, *, positive: bool = False) -> Callable[[object], timedelta]:
    """A parser for a duration up to ``maximum`` (and longer than 0s if ``positive``)."""

    def parse(raw: object) -> timedelta:
        duration = parse_positive_duration(raw) if positive else parse_duration(raw)
        if duration > maximum:
            raise DurationTooLong(f"{raw!r} is too long (at most {format_duration(maximum)})")
        return duration

    return parse


def format_duration(delta: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back, e.g. ``1h30m``; whole seconds only."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        raise ValueError(f"negative duration {delta!r}")
    parts = []
    for unit, size in _DURATION_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# --------------------------------------------------------------------------- value parsers
# Each takes the raw YAML value and returns the typed one or raises ValueError with a message
# that names the value; the reader adds the key path.


def describe_value(raw: object) -> str:
    """A raw value for a message: containers by kind (they can be long), scalars by repr."""
    if isinstance(raw, Mapping):
        return "a mapping"
    if isinstance(raw, list):
        return "a list"
    return repr(raw)


def parse_text(raw: object) -> str:
    """Non-empty text without control characters (a newline, a tab, NUL), spaces around removed."""
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {describe_value(raw)}")
    if not raw.strip():
        raise ValueError("must not be empty")
    text = raw.strip()
    control = _CONTROL_RE.search(text)
    if control is not None:
        # Not the text itself: it may be a URL with a password.
        raise ValueError(f"contains a control character (U+{ord(control[0]):04X})")
    if len(text) > _MAX_TEXT:
        raise ValueError(f"is {len(text)} characters long (at most {_MAX_TEXT})")
    return text


def parse_header_text(raw: object) -> str:
    """Text sent as an HTTP header value as it is (e.g. a User-Agent): printable ASCII only."""
    text = parse_text(raw)
    if not text.isascii():
        raise ValueError(f"{text!r} is sent as an HTTP header: use printable ASCII characters only")
    if len(text) > 1024:
        raise ValueError(f"is {len(text)} characters long (at most 1024 for an HTTP header)")
    return text


def parse_bool(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"expected true or false, got {describe_value(raw)}")
    return raw


def int_parser(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    """A parser for a real YAML integer (not a bool, not a string) within the bounds.

    Without ``maximum`` the bound is 10**9, named in the message only when it is exceeded.
    """
    bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    limit = _MAX_COUNT if maximum is None else maximum

    def parse(raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected a whole number, got {describe_value(raw)}")
        if raw < minimum or (maximum is not None and raw > maximum):
            raise ValueError(f"{raw} is out of range (must be {bounds})")
        if raw > limit:
            raise ValueError(f"{raw} is out of range (must be at most {limit})")
        return raw

    return parse


def parse_share(raw: object) -> float:
    """A share of a whole: a YAML number such as ``0.5``, or ``"50%"``; from 0 up to, not including, 1.

    1 is refused: a share no run can exceed would switch the check it bounds off.
    """
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            value = float(raw.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{raw!r} is not a share (expected e.g. 0.5 or 50%)") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise ValueError(f"{describe_value(raw)} is not a share (expected e.g. 0.5 or 50%)")
    if not 0 <= value < 1:  # also refuses nan
        raise ValueError(f"{raw!r} is out of range (must be at least 0 and below 1)")
    return value


def choice_parser(choices: tuple[_S, ...]) -> Callable[[object], _S]:
    def parse(raw: object) -> _S:
        for choice in choices:
            if raw == choice:
                return choice
        raise ValueError(f"{describe_value(raw)} is not one of {', '.join(choices)}")

    return parse


def parse_positive_duration(raw: object) -> timedelta:
    duration = parse_duration(raw)
    if not duration:
        raise ValueError(f"{raw!r} must be longer than 0s")
    return duration


_LISTEN_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})")


def parse_listen(raw: object) -> str:
    text = parse_text(raw)
    match = _LISTEN_RE.fullmatch(text)
    if match is None or int(match[2]) > 65535:
        raise ValueError(
            f"{text!r} is not a listen address (expected e.g. ':8080', '127.0.0.1:8080', '[::1]:8080')"
        )
    return text


_PREFIX_RE = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")


def parse_prefix(raw: object) -> str:
    text = parse_text(raw)
    if _PREFIX_RE.fullmatch(text) is None:
        raise ValueError(
            f"{text!r} is not a URL prefix (it starts with '/' and does not end with '/', e.g. /pypi)"
        )
    return text


def _split_url(text: str) -> tuple[SplitResult, int | None]:
    """The URL's parts and port; ``ValueError`` (without the URL, it may hold a password) if malformed."""
    try:
        parts = urlsplit(text)
        return parts, parts.port
    except ValueError:
        raise ValueError(f"{mask_url(text)!r} is not a valid URL") from None


def _url_text(raw: object) -> str:
    """The text of a URL: ASCII without spaces (a URL carries anything else percent-encoded)."""
    text = parse_text(raw)
    if not text.isascii() or " " in text:
        raise ValueError(
            f"{mask_url(text)!r} must be ASCII without spaces "
            "(percent-encode other characters, write an international host name in its xn-- form)"
        )
    return text


def parse_http_url(raw: object) -> str:
    """An http(s) base URL with a host, trailing slashes removed (paths are appended to it)."""
    text = _url_text(raw).rstrip("/")
    parts, _ = _split_url(text)
    shown = mask_url(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown!r} is not an http(s) URL with a host (e.g. https://example.org)")
    if parts.query or parts.fragment:
        raise ValueError(f"{shown!r} must not have a query or a fragment")
    return text


def parse_proxy(raw: object) -> str:
    text = _url_text(raw)
    parts, port = _split_url(text)
    shown = mask_url(text)
    if parts.scheme not in PROXY_SCHEMES:
        raise ValueError(f"{shown!r} has an unsupported scheme (expected one of {', '.join(PROXY_SCHEMES)})")
    if not parts.hostname or port is None:
        raise ValueError(f"{shown!r} needs a host and a port, e.g. http://127.0.0.1:3128")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{shown!r} must be scheme://[user:password@]host:port only")
    return text


def database_url_parser(base_dir: Path) -> Callable[[object], str]:
    """A parser for an SQLAlchemy URL; a relative SQLite file is taken from ``base_dir`` like other paths."""

    def parse(raw: object) -> str:
        text = parse_text(raw)
        try:
            url = make_url(text)
            url.get_dialect()
        except (ArgumentError, ValueError) as exc:  # ArgumentError covers an unknown dialect
            raise ValueError(
                f"not a usable SQLAlchemy URL ({exc}); expected e.g. sqlite:////srv/pypi/pypi-mirror.db "
                "or postgresql+psycopg://user:password@db.example.org/pypi"
            ) from None
        if url.get_backend_name() != "sqlite":
            return text
        if url.database in (None, "", ":memory:"):
            raise ValueError(f"{text!r} is an in-memory database: everything would be lost on restart")
        if url.database.startswith("file:") or Path(url.database).is_absolute():
            return text
        return url.set(database=str(base_dir / url.database)).render_as_string(hide_password=False)

    return parse


def parse_network(raw: object) -> IPNetwork:
    if not isinstance(raw, str):
        raise ValueError(f"{describe_value(raw)} is not a network in CIDR notation (e.g. 10.0.0.0/8, 2001:db8::/32)")
    try:
        return ipaddress.ip_network(raw.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{raw!r} is not a network in CIDR notation: {exc}") from None


def parse_ip_mode(raw: object) -> IPMode:
    if raw == "proxy":
        return "proxy"
    if raw == "302" or (isinstance(raw, int) and not isinstance(raw, bool) and raw == 302):
        return "302"
    raise ValueError(f"{describe_value(raw)} is not a mode (expected 302 or proxy)")
