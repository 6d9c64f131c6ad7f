"""Package file paths: the one gate between a request URL and the cache tiers on disk.

:func:`parse_package_path` accepts only the upstream layout ``ab/cd/<hash>/<filename>`` (or its
``.metadata``) and refuses every traversal or encoding trick before anything touches the disk;
:func:`find_in_tiers` then looks the file up without ever following a symlink inside a tier, so
no file outside the tiers is ever opened on a client's behalf.
"""

from __future__ import annotations

__all__ = [
    "MAX_FILENAME_BYTES",
    "MAX_PATH_BYTES",
    "METADATA_SUFFIX",
    "PackagePath",
    "find_in_tiers",
    "parse_package_path",
]

import errno
import logging
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from pypimirror.errors import UnsafePathError

logger = logging.getLogger(__name__)

#: What PEP 658 appends to a distribution's path for its core metadata file.
METADATA_SUFFIX = ".metadata"

MAX_FILENAME_BYTES = 255
MAX_PATH_BYTES = 1024

# A percent-encoded character takes 3; a raw path longer than this cannot decode to an allowed one.
_MAX_RAW_LENGTH = 3 * MAX_PATH_BYTES
# The longest raw path echoed back in an UnsafePathError, so a hostile URL cannot flood a log line.
_MAX_SHOWN_LENGTH = 200

_SEGMENT_COUNT = 4
_DIRECTORY_RES = (
    re.compile(r"[0-9a-f]{2}"),
    re.compile(r"[0-9a-f]{2}"),
    re.compile(r"[0-9a-f]{1,128}"),  # PyPI's is 60 hex digits; mirrors of other indexes may differ
)
_DIRECTORY_NAMES = ("first directory", "second directory", "hash directory")
_VISIBLE_ASCII_RE = re.compile(r"[\x21-\x7e]*")
# The common case in one match: nothing to decode, hex directories, a file name of name-safe
# ASCII not starting with '.' or '-'. What it accepts (without "..") the full check accepts
# unchanged; anything else takes the full check, so the two never disagree.
_PLAIN_PATH_RE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{1,128}/([A-Za-z0-9_+~][A-Za-z0-9._+~-]{0,254})")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Absent, or a symlink loop below the root (a symlink is absent); any other error is reported.
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


class PackagePath(NamedTuple):
    """A checked package file path, in its decoded form (as on disk and as the database key).

    A named tuple rather than a frozen dataclass: one is built per package-file request, and
    a tuple is built in a third of the time.
    """

    relpath: str
    filename: str
    is_metadata: bool

    @property
    def dist_relpath(self) -> str:
        """The path of the distribution itself: ``relpath`` without a ``.metadata`` suffix."""
        return self.relpath.removesuffix(METADATA_SUFFIX) if self.is_metadata else self.relpath


def parse_package_path(raw: str) -> PackagePath:
    """Check and decode the still percent-encoded path after ``{prefix}/packages/``.

    The path must be exactly ``ab/cd/<hash>/<filename>``: two directories of 2 lowercase hex
    digits, one of 1–128, then a file name. Percent escapes are decoded once, per segment, as
    strict UTF-8, so an encoded ``/`` (``%2F``) or ``%`` (double encoding) is refused rather than
    turned into structure. Also refused: anything but visible ASCII in the raw path, empty
    segments, ``..`` anywhere, backslashes, control characters, a file name starting with ``.``
    or ``-`` or longer than 255 bytes, and a decoded path over 1024 bytes. A ``+`` (``%2B``,
    local versions) is an ordinary character. Raises :class:`UnsafePathError` with the reason.
    """
    plain = _PLAIN_PATH_RE.fullmatch(raw)
    if plain is not None and ".." not in raw:
        filename = plain[1]
        return PackagePath(relpath=raw, filename=filename, is_metadata=filename.endswith(METADATA_SUFFIX))
    return _parse_in_full(raw)


def _parse_in_full(raw: str) -> PackagePath:
    """Every check of :func:`parse_package_path`, one by one, naming the first that fails."""
    if len(raw) > _MAX_RAW_LENGTH:
        raise _unsafe(raw, f"longer than {MAX_PATH_BYTES} bytes")
    if not _VISIBLE_ASCII_RE.fullmatch(raw):
        raise _unsafe(raw, "contains a character that is not visible ASCII")
    raw_segments = raw.split("/")
    if len(raw_segments) != _SEGMENT_COUNT:
        raise _unsafe(raw, f"has {len(raw_segments)} segments, expected ab/cd/<hash>/<filename>")
    segments = [_decode_segment(raw, segment) for segment in raw_segments]
    relpath = "/".join(segments)
    if len(relpath.encode()) > MAX_PATH_BYTES:
        raise _unsafe(raw, f"longer than {MAX_PATH_BYTES} bytes")
    for pattern, name, segment in zip(_DIRECTORY_RES, _DIRECTORY_NAMES, segments, strict=False):
        if not pattern.fullmatch(segment):
            raise _unsafe(raw, f"the {name} {segment!r} is not lowercase hex of the right length")
    filename = segments[-1]
    _check_filename(raw, filename)
    is_metadata = filename.endswith(METADATA_SUFFIX)
    return PackagePath(relpath=relpath, filename=filename, is_metadata=is_metadata)


def _decode_segment(raw: str, segment: str) -> str:
    """One segment with its percent escapes decoded once; refuses what decoding would smuggle in."""
    if not segment:
        raise _unsafe(raw, "has an empty segment")
    try:
        decoded = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise _unsafe(raw, "does not decode to UTF-8") from None
    if "/" in decoded:
        raise _unsafe(raw, "has an encoded '/'")
    if "%" in decoded:
        raise _unsafe(raw, "has a '%' left after decoding (double encoding)")
    if "\\" in decoded:
        raise _unsafe(raw, "has a backslash")
    if _CONTROL_RE.search(decoded):
        raise _unsafe(raw, "has a control character")
    if ".." in decoded:
        raise _unsafe(raw, "has '..'")
    return decoded


def _check_filename(raw: str, filename: str) -> None:
    if filename[0] in ".-":
        raise _unsafe(raw, f"the file name {filename!r} starts with {filename[0]!r}")
    if len(filename.encode()) > MAX_FILENAME_BYTES:
        raise _unsafe(raw, f"the file name is longer than {MAX_FILENAME_BYTES} bytes")


def _unsafe(raw: str, reason: str) -> UnsafePathError:
    shown = raw if len(raw) <= _MAX_SHOWN_LENGTH else raw[:_MAX_SHOWN_LENGTH] + "..."
    return UnsafePathError(shown, reason)


def find_in_tiers(tier_roots: Sequence[Path], path: PackagePath) -> tuple[int, Path, os.stat_result] | None:
    """The hottest tier holding ``path`` as a regular file: (tier index, absolute path, its stat).

    Inside a tier nothing is followed: a symlink, at the file or at any directory level, counts
    as absent, as does a directory. (The tier root itself may be a symlink; the administrator
    chose it.) The check is by ``os.lstat``, and the file is looked at first: a miss, the common
    case, costs one call per tier, and only a hit pays three more to prove that no directory
    below the root is a symlink that led the lookup out of the tier. ``lstat`` opens nothing; the
    result is sound as long as only pypimirror writes to the tiers, which creates no symlinks.
    Unreadable tiers are logged and skipped. ``tier_roots`` are absolute, as the config makes them.
    Paths are joined as strings: a checked relpath has no ``..``, no empty segment and no
    leading ``/``, and ``pathlib`` joins cost more than the ``lstat`` itself.
    """
    relpath = path.relpath
    for index, root in enumerate(tier_roots):
        root_text = os.fspath(root)
        target = f"{root_text}/{relpath}"
        try:
            file_stat = os.lstat(target)
            if stat.S_ISREG(file_stat.st_mode) and _are_real_directories(root_text, relpath):
                return index, root / relpath, file_stat
        except OSError as exc:
            if exc.errno not in _ABSENT_ERRNOS:
                logger.warning("cannot look up %s: %s", target, exc)
    return None


def _are_real_directories(root: str, relpath: str) -> bool:
    """Whether every directory of ``relpath`` below ``root`` (ab, ab/cd, ab/cd/<hash>) is one, not a symlink."""
    slash = relpath.find("/")
    while slash != -1:
        if not stat.S_ISDIR(os.lstat(f"{root}/{relpath[:slash]}").st_mode):
            return False
        slash = relpath.find("/", slash + 1)
    return True
