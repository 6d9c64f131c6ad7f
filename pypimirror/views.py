"""Policy views: the index seen through a rule, as a filter over the page model.

A view is what ``{prefix}/+cooldown/{duration}/…`` and ``{prefix}/+view/{name}/…`` serve: the
plain index with some files left out. Each view turns a :class:`~pypimirror.pagemodel.ProjectPage`
into the page it shows (:meth:`AgePolicy.apply`) and the root list into the list it shows
(:meth:`AgePolicy.root`), so serving, caching and the file route need not know which rule made
it. Rules shared by every view, whatever its kind:

* a file without an upload time is left out: its age cannot be told, so the view fails closed
  (as uv does for ``exclude-newer``);
* ``versions`` lists only the versions that keep a file;
* a quarantined project offers no files (the page model already drops them).

The words a URL or the configuration use for a view are read here too: durations such as
``7d``, ``12h``, ``30m`` or ``2w`` (:func:`parse_age`) and moments in RFC 3339 or as a plain
date, taken as UTC midnight (:func:`parse_moment`). Each refuses anything else with a one-line
``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "VIEW_NAME",
    "AgePolicy",
    "View",
    "ViewError",
    "ViewResolver",
    "ViewedProject",
    "format_moment",
    "keep_files",
    "one_line",
    "parse_age",
    "parse_moment",
    "parse_upload_time",
]

import dataclasses
import fnmatch
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Protocol

from packaging.utils import NormalizedName

from pypimirror.configvalues import DurationTooLong, format_duration, parse_duration
from pypimirror.pagemodel import DistFile, ProjectPage

#: What a named view's name may be: it stands in URLs as it is.
VIEW_NAME: Final = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")

_WEEKS = re.compile(r"(\d+)w(.*)", re.ASCII)
_AGE_EXAMPLES = "expected e.g. 30m, 12h, 7d, 2w"
_MAX_AGE = timedelta(days=3650)
_MOMENT = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2}))?", re.ASCII
)
_MOMENT_EXAMPLES = "expected RFC 3339 such as 2026-06-01T12:00:00Z, or a date such as 2026-06-01"
_NO_UPLOAD_TIME = "it has no upload time, so its age cannot be told"
# Parsed upload times; a page is re-parsed when it changes, and its times mostly do not.
_UPLOAD_TIMES_CACHED = 65536


class ViewError(Exception):
    """A view URL that names no view (a malformed duration, an unknown name): one line, for a 404."""


def parse_age(raw: object) -> timedelta:
    """A positive duration: whole numbers with units, largest first: ``2w``, ``7d``, ``1d12h``, ``30m``.

    The units are those of the configuration's durations (``d h m s``) plus ``w`` (weeks), as
    the clients' own cooldown settings use them.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{raw!r} is not a duration ({_AGE_EXAMPLES})")
    text = raw.strip()
    weeks, rest = 0, text
    match = _WEEKS.fullmatch(text)
    if match is not None:
        weeks, rest = int(match[1]), match[2]
    try:
        age = timedelta(weeks=min(weeks, 10**6)) + (parse_duration(rest) if rest else timedelta())
    except DurationTooLong:
        age = _MAX_AGE + timedelta(seconds=1)
    except ValueError:
        raise ValueError(f"{raw!r} is not a duration ({_AGE_EXAMPLES})") from None
    if age > _MAX_AGE:
        raise ValueError(f"{raw!r} is too long (at most {format_duration(_MAX_AGE)})")
    if age <= timedelta():
        raise ValueError(f"{raw!r} is not longer than 0 ({_AGE_EXAMPLES})")
    return age


def parse_moment(raw: object) -> datetime:
    """An aware UTC ``datetime`` from RFC 3339 text or a plain date (UTC midnight).

    YAML hands over dates and timestamps already parsed: a ``date`` is its UTC midnight, an
    aware ``datetime`` is converted to UTC, and a naive one is refused (its zone is unknown).
    """
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise ValueError(f"{raw.isoformat()!r} has no time zone (add Z or an offset such as +02:00)")
        return raw.astimezone(UTC)
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day, tzinfo=UTC)
    if not isinstance(raw, str) or _MOMENT.fullmatch(raw) is None:
        raise ValueError(f"{raw!r} is not a moment ({_MOMENT_EXAMPLES})")
    text = raw.upper().replace("Z", "+00:00")
    fraction = re.search(r"\.(\d+)", text)
    if fraction is not None and len(fraction[1]) > 6:  # datetime holds microseconds
        text = text[: fraction.start(1) + 6] + text[fraction.end(1) :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{raw!r} is not a real date and time") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_moment(moment: datetime) -> str:
    """A UTC moment as RFC 3339 with ``Z``, seconds only (how views and their messages show it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_upload_time(text: str) -> datetime:
    """A page model's ``upload_time`` (already checked: PEP 700's form) as an aware UTC datetime."""
    return _cached_upload_time(text)


@functools.lru_cache(maxsize=_UPLOAD_TIMES_CACHED)
def _cached_upload_time(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ViewedProject:
    """A project's page as a view shows it, with what the view left out and why.

    ``refused`` maps each left-out filename to the reason. ``changes_at`` is the POSIX time at
    which the same source page would be viewed differently (a file coming of age), ``inf`` if
    never; ``changed_at`` is the last such time already past, ``-inf`` if none, so that the
    view's ``Last-Modified`` can move on when its content does.
    """

    page: ProjectPage
    refused: Mapping[str, str]
    changes_at: float
    changed_at: float


class View(Protocol):
    """What the serving side needs of any view (:class:`AgePolicy` is one).

    ``apply`` and ``root`` may raise :class:`ViewError` (the view cannot show that page, a
    404); a view whose ``blocking`` is true does I/O in them, so they run in a worker thread.
    """

    @property
    def label(self) -> str: ...

    @property
    def blocking(self) -> bool: ...

    def apply(self, page: ProjectPage, now: float) -> ViewedProject: ...

    def apply_absent(self, name: NormalizedName, now: float) -> ViewedProject:
        """The page of a project the mirror has no page of now; :class:`ViewError` if none."""
        ...

    def root(self, entries: Sequence[tuple[str, NormalizedName, int]]) -> Sequence[tuple[str, NormalizedName, int]]: ...


@dataclass(frozen=True, slots=True)
class AgePolicy:
    """A view that leaves out files younger than ``min_age`` or uploaded after ``not_after``.

    ``label`` is the view's place under the mirror's prefix (``+cooldown/7d``, ``+view/stable``).
    Projects matching one of the ``exempt`` patterns (shell globs over normalized names) are
    spared both limits, but not the fail-closed rule: a file without an upload time is left out
    in every view.
    """

    label: str
    min_age: timedelta | None = None
    not_after: datetime | None = None
    exempt: tuple[str, ...] = ()

    @property
    def blocking(self) -> bool:
        return False

    def describe(self) -> str:
        """What the view leaves out, in one line (for the info page)."""
        limits = []
        if self.min_age is not None:
            limits.append(f"files uploaded less than {format_duration(self.min_age)} ago")
        if self.not_after is not None:
            limits.append(f"files uploaded after {format_moment(self.not_after)}")
        text = "leaves out " + " and ".join(limits)
        return text + (f"; exempt: {', '.join(self.exempt)}" if self.exempt else "")

    def is_exempt(self, name: NormalizedName) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exempt)

    def apply(self, page: ProjectPage, now: float) -> ViewedProject:
        """``page`` as this view shows it at POSIX time ``now``."""
        exempt = self.is_exempt(page.name)
        kept: list[DistFile] = []
        refused: dict[str, str] = {}
        changes_at, changed_at = math.inf, -math.inf
        for dist in page.files:
            if dist.upload_time is None:
                refused[dist.filename] = _NO_UPLOAD_TIME
                continue
            if exempt:
                kept.append(dist)
                continue
            uploaded = parse_upload_time(dist.upload_time)
            reason = self._too_late(uploaded)
            if reason is None and self.min_age is not None:
                of_age = (uploaded + self.min_age).timestamp()
                if of_age > now:
                    reason = (f"uploaded {format_moment(uploaded)}, less than {format_duration(self.min_age)} ago"
                              f" (allowed from {format_moment(uploaded + self.min_age)})")
                    changes_at = min(changes_at, of_age)
                else:
                    changed_at = max(changed_at, of_age)
            if reason is None:
                kept.append(dist)
            else:
                refused[dist.filename] = reason
        return ViewedProject(keep_files(page, kept), refused, changes_at, changed_at)

    def apply_absent(self, name: NormalizedName, now: float) -> ViewedProject:
        """A project without a page on the plain index has none in the view either."""
        raise ViewError(f"this mirror has no page of {name}")

    def root(self, entries: Sequence[tuple[str, NormalizedName, int]]) -> Sequence[tuple[str, NormalizedName, int]]:
        """Every project stays listed: one whose files are all too young has an empty page, as
        a project without files has on the plain index."""
        return entries

    def _too_late(self, uploaded: datetime) -> str | None:
        if self.not_after is None or uploaded <= self.not_after:
            return None
        return f"uploaded {format_moment(uploaded)}, after this view's cut-off {format_moment(self.not_after)}"


def keep_files(page: ProjectPage, kept: Iterable[DistFile]) -> ProjectPage:
    """``page`` with only the files ``kept``, and only the versions that still have a file."""
    files = tuple(kept)
    if len(files) == len(page.files):
        return page
    versions = {dist.version for dist in files}
    return dataclasses.replace(page, files=files, versions=tuple(v for v in page.versions if v in versions))


class ViewResolver:
    """Finds the view a URL names: ``+cooldown/{duration}``, ``+view/{name}`` (``named``) or
    ``+asof/{timestamp}`` (made by ``as_of``; None where the mirror has no history to read)."""

    def __init__(self, named: Mapping[str, AgePolicy], as_of: Callable[[str], View] | None = None) -> None:
        self._named = dict(named)
        self._as_of = as_of

    @property
    def named(self) -> Mapping[str, AgePolicy]:
        return self._named

    def resolve(self, kind: str, argument: str) -> View:
        """The view, or :class:`ViewError` saying in one line why there is none."""
        if kind == "view":
            found = self._named.get(argument)
            if found is None:
                known = ", ".join(sorted(self._named)) or "none are configured"
                raise ViewError(f"no view named {one_line(argument)} (known: {known})")
            return found
        if kind == "cooldown":
            return _cooldown(argument)
        if kind == "asof":
            if self._as_of is None:
                raise ViewError("this mirror serves no index history")
            return self._as_of(argument)
        raise ViewError(f"no kind of view named {one_line(kind)}")


@functools.lru_cache(maxsize=256)
def _cooldown(argument: str) -> AgePolicy:
    """The cooldown view a URL names; its label keeps the client's spelling, so links stay in it."""
    try:
        age = parse_age(argument)
    except ValueError as exc:
        raise ViewError(f"+cooldown/{one_line(argument)}: {one_line(str(exc))}") from None
    return AgePolicy(label=f"+cooldown/{argument}", min_age=age)


def one_line(text: str) -> str:
    """``text`` fit for a status line and a header: printable ASCII, escapes for the rest, bounded."""
    shown = text.encode("ascii", "backslashreplace").decode("ascii")
    shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m[0]):02x}", shown)
    return shown if len(shown) <= 200 else shown[:200] + "..."
