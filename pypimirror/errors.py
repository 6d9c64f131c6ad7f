"""The one exception tree of pypimirror.

Every error the program expects (bad input, a failing upstream, a refused sync) is a
``PyPIMirrorError``; the CLI prints such an error as one line and exits 2. Anything else
is a bug and keeps its traceback. Errors carry their facts as attributes as well as text::

    PyPIMirrorError
    ├── ConfigError(problems)            one or more bad configuration keys
    ├── DatabaseError                    the database cannot be opened or used
    │   └── DatabaseFileError(reason)    the SQLite file was deleted, replaced or overwritten
    ├── UpstreamError(url)               an outbound request failed
    │   ├── UpstreamUnavailable          connect/DNS/TLS/timeout/proxy failure, no answer
    │   ├── UpstreamStatusError(status)  the upstream answered with an unexpected status
    │   ├── StaleSerialError(project, want, got, attempts)
    │   └── MalformedUpstreamError       the answer does not parse as what it should be
    ├── StorageError                     files on disk
    │   ├── UnsafePathError(path)        a request path that must never touch the disk
    │   └── IntegrityError(path, expected, actual)
    ├── SyncRefusedError                 a sync step refused to run (e.g. too many removals)
    ├── LockfileError(path, entry, reason) a lockfile or one entry of it cannot be read
    ├── PinTargetError(value, reason)    a --platform or --python value that is not one
    ├── PinnedSetError                   a pinned set that cannot be stored (no room, bad name) or found
    ├── TraceInputError(source)          a popularity list or the stored pages cannot feed a trace
    ├── JobLockedError(holder)           another runner holds the sync lease
    └── UnknownJobError(name, known)     a job name that is not in the jobs' table
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "DatabaseError",
    "DatabaseFileError",
    "IntegrityError",
    "JobLockedError",
    "LockfileError",
    "MalformedUpstreamError",
    "PinTargetError",
    "PinnedSetError",
    "PyPIMirrorError",
    "StaleSerialError",
    "StorageError",
    "SyncRefusedError",
    "TraceInputError",
    "UnknownJobError",
    "UnsafePathError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamUnavailable",
]

from dataclasses import dataclass


class PyPIMirrorError(Exception):
    """Base of every error pypimirror expects and reports without a traceback."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One bad configuration key: where it is and what is wrong with it."""

    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}" if self.key_path else self.message


class ConfigError(PyPIMirrorError):
    """The configuration cannot be used; lists every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(p) for p in self.problems))


class DatabaseError(PyPIMirrorError):
    """The database cannot be opened, migrated or reached."""


class DatabaseFileError(DatabaseError):
    """The SQLite file in use is not the one at its path any more (``reason`` says how)."""

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class UpstreamError(PyPIMirrorError):
    """An outbound request did not give a usable answer."""

    def __init__(self, message: str, url: str = "") -> None:
        self.url = url
        super().__init__(message)


class UpstreamUnavailable(UpstreamError):
    """No answer at all: refused, DNS, TLS, proxy or a stalled transfer."""


class UpstreamStatusError(UpstreamError):
    """The upstream answered, but with a status we cannot use."""

    def __init__(self, message: str, url: str = "", status: int = 0) -> None:
        self.status = status
        super().__init__(message, url)


class StaleSerialError(UpstreamError):
    """The upstream kept answering with an older serial than its listing promised."""

    def __init__(self, project: str, want: int, got: int | None, attempts: int, url: str = "") -> None:
        self.project = project
        self.want = want
        self.got = got
        self.attempts = attempts
        super().__init__(
            f"{project!r}: upstream serial {got!r} is older than the listed {want} "
            f"after {attempts} attempts",
            url,
        )


class MalformedUpstreamError(UpstreamError):
    """The upstream's answer does not have the shape the standard requires."""


class StorageError(PyPIMirrorError):
    """A file could not be read, written or moved as required."""


class UnsafePathError(StorageError):
    """A requested path is not a well-formed package path; nothing on disk is touched."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unsafe path {path!r}: {reason}")


class IntegrityError(StorageError):
    """Downloaded bytes do not match what the index says they must be."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path!r}: expected {expected}, got {actual}")


class SyncRefusedError(PyPIMirrorError):
    """A sync step refused to run because its input looks wrong (it would lose data)."""


class LockfileError(PyPIMirrorError):
    """A lockfile, or one entry of it, cannot be read; ``entry`` says where (a line, a package)."""

    def __init__(self, path: str, entry: str, reason: str) -> None:
        self.path = path
        self.entry = entry
        self.reason = reason
        super().__init__(f"{path}: {entry}: {reason}" if entry else f"{path}: {reason}")


class PinTargetError(PyPIMirrorError):
    """A platform tag or Python version to narrow pins by is malformed."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value!r}: {reason}")


class PinnedSetError(PyPIMirrorError):
    """A pinned set cannot be stored (a bad name, nothing to pin, no room) or is not there."""


class TraceInputError(PyPIMirrorError):
    """An input of a synthetic trace (a popularity list, the stored pages) cannot be used.

    ``source`` names the input (a file, with its line where one is at fault).
    """

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class JobLockedError(PyPIMirrorError):
    """Another runner holds the sync lease for this mirror."""

    def __init__(self, holder: str, expires_at: float) -> None:
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(f"another sync holds the lease: {holder} (expires at {expires_at:.0f})")


class UnknownJobError(PyPIMirrorError, LookupError):
    """A job name that no entry of the jobs' table has; ``known`` are the names it has."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown job {name!r}; the jobs are: {', '.join(known)}")
