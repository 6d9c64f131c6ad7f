"""Synthetic access logs of a realistic shape, for sizing a cache before there are real logs.

:func:`write_synthetic_trace` writes an nginx-style ``combined`` log (so
:class:`~pypimirror.trace.TraceReader` reads it back) of downloads of the files the stored pages
list, driven by a public download count per project. The model (every knob is a field of
:class:`SyntheticModel`; ``docs/synthetic-traces.md`` explains each) in short: projects are
drawn by popularity; within a project the newest release takes most downloads and older ones
ever fewer, and a release inside the trace window takes over within a day; the file is the
wheel a client of a drawn platform and Python version would install, an sdist now and then; a
share of requests are one-offs for random files of random projects; clients come from
thousands of networks, a few of them busy; time follows a daily and a weekly cycle.

The output is deterministic for a seed, written in time order one hour at a time (memory does
not grow with the number of requests), gzipped when the name ends in ``.gz``, and appears
whole or not at all. :func:`pypimirror.popularity.read_popularity_csv` reads the download counts.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PLATFORM_MIX",
    "DEFAULT_PYTHON_MIX",
    "SyntheticModel",
    "SyntheticSummary",
    "write_synthetic_trace",
]

import bisect
import gzip
import itertools
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Final, cast
from urllib.parse import quote

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, NormalizedName, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pypimirror.errors import StorageError, TraceInputError
from pypimirror.pagescan import ListedFile
from pypimirror.storage import atomic_writer
from pypimirror.wheelplatform import PLATFORM_CLASSES, parse_python_version, python_fit, tag_platform_classes

logger = logging.getLogger(__name__)

_DAY_S: Final = 86_400
_HOUR_S: Final = 3_600
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Draws of a project that has no release yet at the request's time, before it becomes a one-off.
_PROJECT_REDRAWS: Final = 8
_PLAIN_PATH_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~/-")

#: Client platforms and their share of wheel downloads (roughly the public index's statistics).
DEFAULT_PLATFORM_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {
        "manylinux-x86_64": 0.60,
        "macos-arm64": 0.12,
        "windows-amd64": 0.10,
        "manylinux-aarch64": 0.07,
        "musllinux-x86_64": 0.05,
        "macos-x86_64": 0.04,
        "musllinux-aarch64": 0.01,
        "windows-x86": 0.01,
    }
)
#: Client Python versions and their share of downloads.
DEFAULT_PYTHON_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {"3.13": 0.10, "3.12": 0.28, "3.11": 0.24, "3.10": 0.17, "3.9": 0.13, "3.8": 0.06, "3.7": 0.02}
)


@dataclass(frozen=True, slots=True)
class SyntheticModel:
    """The knobs of the synthetic trace; the defaults give the shape of a public mirror's traffic.

    ``docs/synthetic-traces.md`` says why each default is what it is.
    """

    newest_share: float = 0.7
    older_decay: float = 0.5
    release_ramp_hours: float = 24.0
    platform_mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_PLATFORM_MIX)
    python_mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_PYTHON_MIX)
    sdist_share: float = 0.02
    tail_share: float = 0.05
    networks: int = 3_000
    network_exponent: float = 1.0
    daily_amplitude: float = 0.5
    peak_hour_utc: float = 14.0
    weekend_factor: float = 0.7
    metadata_share: float = 0.0
    prefix: str = "/pypi"

    def check(self) -> None:
        """Raise ValueError naming the first knob outside its range."""
        shares = {
            "newest_share": self.newest_share,
            "older_decay": self.older_decay,
            "sdist_share": self.sdist_share,
            "tail_share": self.tail_share,
            "daily_amplitude": self.daily_amplitude,
            "metadata_share": self.metadata_share,
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.release_ramp_hours < 0 or self.network_exponent < 0 or self.weekend_factor < 0:
            raise ValueError("release_ramp_hours, network_exponent and weekend_factor must not be negative")
        if not 0.0 <= self.peak_hour_utc < 24.0:
            raise ValueError(f"peak_hour_utc must be in [0, 24), got {self.peak_hour_utc!r}")
        if not 1 <= self.networks <= 1 << 16:
            raise ValueError(f"networks must be between 1 and 65536 (IPv4 /24s in 10.0.0.0/8), got {self.networks!r}")
        for name, mix in (("platform_mix", self.platform_mix), ("python_mix", self.python_mix)):
            if not mix or any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
                raise ValueError(f"{name} needs at least one positive weight and none negative")
        for version in self.python_mix:
            parse_python_version(version)
        unknown = sorted(set(self.platform_mix) - set(PLATFORM_CLASSES))
        if unknown:
            raise ValueError(f"platform_mix: unknown platforms {unknown!r}; known: {', '.join(PLATFORM_CLASSES)}")


@dataclass(frozen=True, slots=True)
class SyntheticSummary:
    """What :func:`write_synthetic_trace` wrote.

    ``requests`` are download lines (``tail_requests`` of them one-offs); ``metadata_requests``
    are the extra ``.metadata`` lines. ``distinct_files``/``distinct_bytes`` count the files
    downloaded at least once. ``projects`` of the popularity list have stored pages and were
    used; ``missing_projects`` have none. ``start_time``/``end_time`` bound the trace window.
    """

    requests: int
    tail_requests: int
    metadata_requests: int
    distinct_files: int
    distinct_bytes: int
    projects: int
    missing_projects: int
    networks: int
    start_time: float
    end_time: float


# --------------------------------------------------------------------------- the model's state


class _Project:
    """One project's files grouped by release, and which releases exist at the current time."""

    __slots__ = ("_next_upload", "_pending", "available", "choices", "newest_upload", "tail_files")

    def __init__(self, files: list[tuple[float, int, ListedFile]]) -> None:
        by_version: dict[str | None, list[tuple[float, int, ListedFile]]] = {}
        for item in files:
            by_version.setdefault(item[2].version, []).append(item)
        # (first upload, preference key, file indices), not yet uploaded at the current time, oldest first.
        self._pending = sorted(
            (min(u for u, _, _ in group), _release_key(version), [index for _, index, _ in group])
            for version, group in by_version.items()
        )
        self._next_upload = self._pending[0][0] if self._pending else math.inf
        self.available: list[tuple[float, tuple[int, Version, str], list[int]]] = []
        self.newest_upload = -math.inf
        self.choices: dict[tuple[int, str, str], int] = {}
        # Files by upload time, for one-off requests of files that exist at the time.
        self.tail_files = sorted((u, index) for u, index, _ in files)

    def advance(self, now: float) -> None:
        """Make the releases uploaded by ``now`` available, best first."""
        if now < self._next_upload:
            return
        while self._pending and self._pending[0][0] <= now:
            self.available.append(self._pending.pop(0))
        self._next_upload = self._pending[0][0] if self._pending else math.inf
        self.available.sort(key=lambda release: release[1], reverse=True)
        self.newest_upload = self.available[0][0]


def _release_key(version: str | None) -> tuple[int, Version, str]:
    """Final releases above pre-releases above unparseable versions, each by version."""
    if version is None:
        return (0, Version("0"), "")
    try:
        parsed = Version(version)
    except InvalidVersion:
        return (1, Version("0"), version)
    return (2 if parsed.pre is None and parsed.dev is None else 1, parsed, version)


class _Generator:
    """The draws of the model, in the order that makes a seed reproduce its trace."""

    def __init__(
        self,
        files: list[ListedFile],
        popularity: Mapping[NormalizedName, int],
        model: SyntheticModel,
        rng: random.Random,
    ) -> None:
        self.model = model
        self.rng = rng
        self.files = files
        by_project: dict[NormalizedName, list[tuple[float, int, ListedFile]]] = {}
        for index, listed in enumerate(files):
            uploaded = listed.upload_time if listed.upload_time is not None else -math.inf
            by_project.setdefault(listed.project, []).append((uploaded, index, listed))
        self.projects = {name: _Project(group) for name, group in sorted(by_project.items())}
        self.all_projects = list(self.projects.values())
        popular = sorted((name, count) for name, count in popularity.items() if name in self.projects and count > 0)
        self.popular = [self.projects[name] for name, _ in popular]
        self.popular_cum = list(itertools.accumulate(count for _, count in popular))
        self.platforms = sorted(model.platform_mix)
        self.platform_cum = list(itertools.accumulate(model.platform_mix[p] for p in self.platforms))
        self.pythons = sorted(model.python_mix)
        self.python_cum = list(itertools.accumulate(model.python_mix[p] for p in self.pythons))
        self.python_tuples = {version: parse_python_version(version) for version in self.pythons}
        self.network_cum = list(
            itertools.accumulate(1.0 / rank**model.network_exponent for rank in range(1, model.networks + 1))
        )
        # Network ranks map to /24s in 10.0.0.0/8 in a shuffled order, so busy ones are not adjacent.
        slots = rng.sample(range(1 << 16), model.networks)
        self.network_prefixes = [f"10.{slot >> 8}.{slot & 255}." for slot in slots]
        self.rank_weights: dict[int, list[float]] = {}
        self.ramp_s = model.release_ramp_hours * _HOUR_S
        self.wheel_tags: dict[int, tuple[frozenset[str], frozenset[Tag]]] = {}
        self._files_by_upload: list[tuple[float, int]] | None = None  # built when first needed (rarely)

    def draw(self, now: float) -> tuple[int, bool]:
        """(file index, whether it is a one-off) of one download at ``now``."""
        rng = self.rng
        if self.popular and rng.random() >= self.model.tail_share:
            for _ in range(_PROJECT_REDRAWS):
                project = self.popular[bisect.bisect(self.popular_cum, rng.random() * self.popular_cum[-1])]
                project.advance(now)
                if project.available:
                    return self._file_of(project, now), False
        return self._one_off(now), True

    def network(self) -> int:
        return bisect.bisect(self.network_cum, self.rng.random() * self.network_cum[-1])

    def _one_off(self, now: float) -> int:
        """A file uploaded by ``now`` of a project drawn uniformly: the long tail."""
        rng = self.rng
        for _ in range(_PROJECT_REDRAWS):
            tail = rng.choice(self.all_projects).tail_files
            available = bisect.bisect(tail, (now, math.inf))
            if available:
                return tail[rng.randrange(available)][1]
        # Projects with nothing uploaded yet were drawn again and again: any file that exists.
        if self._files_by_upload is None:
            self._files_by_upload = sorted(
                (listed.upload_time if listed.upload_time is not None else -math.inf, index)
                for index, listed in enumerate(self.files)
            )
        by_upload = self._files_by_upload
        available = bisect.bisect(by_upload, (now, math.inf))
        return by_upload[rng.randrange(available) if available else 0][1]

    def _file_of(self, project: _Project, now: float) -> int:
        rng = self.rng
        releases = project.available
        if len(releases) > 1 and now - project.newest_upload < self.ramp_s:
            # The newest release is taking over: until the ramp ends, some clients still get the previous one.
            if rng.random() * self.ramp_s > now - project.newest_upload:
                releases = releases[1:]
        weights = self._rank_weights(len(releases))
        rank = bisect.bisect(weights, rng.random() * weights[-1])
        release_files = releases[rank][2]
        if rng.random() < self.model.sdist_share:
            platform, python = "sdist", ""
        else:
            platform = self.platforms[bisect.bisect(self.platform_cum, rng.random() * self.platform_cum[-1])]
            python = self.pythons[bisect.bisect(self.python_cum, rng.random() * self.python_cum[-1])]
        key = (release_files[0], platform, python)
        chosen = project.choices.get(key)
        if chosen is None:
            chosen = self._best_file(release_files, platform, python)
            project.choices[key] = chosen
        return chosen

    def _rank_weights(self, count: int) -> list[float]:
        """Cumulative download weights of a project's releases, best first."""
        weights = self.rank_weights.get(count)
        if weights is None:
            model = self.model
            if count == 1:
                raw = [1.0]
            else:
                older = [model.older_decay**k for k in range(count - 1)]
                total = sum(older)
                raw = [model.newest_share] + [(1.0 - model.newest_share) * w / total for w in older]
            weights = list(itertools.accumulate(raw))
            if weights[-1] <= 0:
                weights = list(itertools.accumulate([1.0] + [0.0] * (count - 1)))
            self.rank_weights[count] = weights
        return weights

    def _best_file(self, indices: list[int], platform: str, python: str) -> int:
        """The file a client of ``platform`` and ``python`` installs from a release, as a resolver picks.

        The wheel built most specifically for it (platform-specific before pure, then a build
        for its Python before abi3 before ``py3``); else the sdist; else (nothing fits, as for a
        Windows-only project on Linux) the release's first file by name, so every draw is a download.
        """
        sdist = next((i for i in indices if not self.files[i].filename.endswith(".whl")), None)
        if platform == "sdist":
            if sdist is not None:
                return sdist
            # No sdist to build from: the client takes a wheel, as the mix's most common client would.
            platform = max(self.platforms, key=lambda p: self.model.platform_mix[p])
            python = max(self.pythons, key=lambda p: self.model.python_mix[p])
        best: tuple[int, str] | None = None
        best_index = -1
        version = self.python_tuples.get(python)
        for index in indices:
            classes, tags = self._tags(index)
            if version is None or not (platform in classes or "any" in classes):
                continue
            fit = max((python_fit(tag, version) for tag in tags), default=0)
            if fit == 0:
                continue
            score = (fit + (10 if platform in classes else 0), self.files[index].filename)
            if best is None or score > best:
                best, best_index = score, index
        if best is not None:
            return best_index
        if sdist is not None:
            return sdist
        return min(indices, key=lambda i: self.files[i].filename)

    def _tags(self, index: int) -> tuple[frozenset[str], frozenset[Tag]]:
        found = self.wheel_tags.get(index)
        if found is None:
            filename = self.files[index].filename
            try:
                tags = parse_wheel_filename(filename)[3] if filename.endswith(".whl") else frozenset()
            except InvalidWheelFilename:
                tags = frozenset()
            classes = frozenset(c for tag in tags for c in tag_platform_classes(tag.platform))
            found = (classes, tags)
            self.wheel_tags[index] = found
        return found


# --------------------------------------------------------------------------- writing


def write_synthetic_trace(
    out: Path,
    *,
    listed: Mapping[str, ListedFile],
    popularity: Mapping[NormalizedName, int],
    days: int,
    requests: int,
    seed: int,
    model: SyntheticModel | None = None,
    end_time: float | None = None,
) -> SyntheticSummary:
    """Write ``requests`` downloads over ``days`` days to ``out`` in the ``combined`` format (blocking).

    ``listed`` are the stored pages' files (:func:`~pypimirror.pagescan.scan_listed_files`),
    ``popularity`` the downloads per project (:func:`~pypimirror.popularity.read_popularity_csv`); only projects with
    stored pages are used. The window ends at ``end_time``, by default at the UTC midnight
    after the newest upload the pages list (so the releases of the last ``days`` fall inside
    it). Raises ValueError for a knob out of range,
    :class:`~pypimirror.errors.TraceInputError` when no listed file or no popular project
    with a page is there to draw from, and :class:`~pypimirror.errors.StorageError` when
    ``out`` cannot be written (an older file there is then left as it was).
    """
    model = model or SyntheticModel()
    model.check()
    if days < 1 or requests < 0:
        raise ValueError(f"days must be at least 1 and requests not negative, got {days!r} and {requests!r}")
    files = sorted(listed.values(), key=lambda f: f.path)
    if not files:
        raise TraceInputError("stored pages", "they list no file; run an index sync first")
    rng = random.Random(seed)
    generator = _Generator(files, popularity, model, rng)
    if not generator.popular and model.tail_share < 1.0:
        raise TraceInputError("popularity list", f"none of its {len(popularity)} projects has a stored page")
    if end_time is None:
        newest = max((f.upload_time for f in files if f.upload_time is not None), default=0.0)
        end_time = float(math.floor(newest / _DAY_S) + 1) * _DAY_S
    start_time = end_time - days * _DAY_S
    downloaded = bytearray(len(files))
    networks_used = bytearray(model.networks)
    counts = {"tail": 0, "metadata": 0}
    hours = zip(
        range(int(start_time), int(end_time), _HOUR_S), _hourly_counts(requests, start_time, days, model), strict=True
    )
    try:
        with _atomic_output(out) as handle:
            for hour_start, count in hours:
                handle.write(_hour_lines(generator, hour_start, count, downloaded, networks_used, counts).encode("ascii"))
    except OSError as exc:
        raise StorageError(f"cannot write the trace {str(out)!r}: {exc.strerror or exc}") from exc
    distinct = [index for index, flag in enumerate(downloaded) if flag]
    summary = SyntheticSummary(
        requests=requests,
        tail_requests=counts["tail"],
        metadata_requests=counts["metadata"],
        distinct_files=len(distinct),
        distinct_bytes=sum(files[index].size for index in distinct),
        projects=len(generator.popular),
        missing_projects=sum(1 for name in popularity if name not in generator.projects),
        networks=sum(networks_used),
        start_time=start_time,
        end_time=end_time,
    )
    logger.info(
        "synthetic trace %s: %d requests over %d days, %d distinct files (%d bytes)",
        out, requests, days, summary.distinct_files, summary.distinct_bytes,
    )
    return summary


def _hourly_counts(requests: int, start_time: float, days: int, model: SyntheticModel) -> list[int]:
    """``requests`` spread over the window's hours by the daily and weekly cycle (largest remainder)."""
    weights = []
    for hour in range(days * 24):
        moment = start_time + hour * _HOUR_S + _HOUR_S / 2
        hour_of_day = (moment % _DAY_S) / _HOUR_S
        weight = 1.0 + model.daily_amplitude * math.cos(2 * math.pi * (hour_of_day - model.peak_hour_utc) / 24)
        if time.gmtime(moment).tm_wday >= 5:
            weight *= model.weekend_factor
        weights.append(max(weight, 0.0))
    total = sum(weights) or 1.0
    exact = [requests * weight / total for weight in weights]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda hour: (counts[hour] - exact[hour], hour))
    for hour in by_remainder[: requests - sum(counts)]:
        counts[hour] += 1
    return counts


def _hour_lines(
    generator: _Generator,
    hour_start: int,
    count: int,
    downloaded: bytearray,
    networks_used: bytearray,
    counts: dict[str, int],
) -> str:
    """The log lines of one hour, in time order."""
    rng = generator.rng
    files = generator.files
    model = generator.model
    prefix = model.prefix.rstrip("/") + "/packages/"
    moments = sorted(hour_start + int(rng.random() * _HOUR_S) for _ in range(count))
    lines: list[str] = []
    last_second, stamp = -1, ""
    for moment in moments:
        if moment != last_second:
            last_second, stamp = moment, _stamp(moment)
        index, is_tail = generator.draw(float(moment))
        network = generator.network()
        client = generator.network_prefixes[network] + str(rng.randint(1, 254))
        listed = files[index]
        path = listed.path if _PLAIN_PATH_CHARS.issuperset(listed.path) else quote(listed.path, safe="/")
        head = f'{client} - - [{stamp}] "GET {prefix}{path}'
        if model.metadata_share and rng.random() < model.metadata_share:
            lines.append(f'{head}.metadata HTTP/1.1" 200 {max(1, listed.size // 100)} "-" "{_USER_AGENT}"\n')
            counts["metadata"] += 1
        lines.append(f'{head} HTTP/1.1" 200 {listed.size} "-" "{_USER_AGENT}"\n')
        downloaded[index] = 1
        networks_used[network] = 1
        counts["tail"] += is_tail
    return "".join(lines)


# pip's User-Agent carries JSON; nginx escapes its quotes as \x22.
_USER_AGENT: Final = 'pip/24.2 {\\x22installer\\x22:{\\x22name\\x22:\\x22pip\\x22,\\x22version\\x22:\\x2224.2\\x22}}'


def _stamp(moment: int) -> str:
    """``01/Jan/2026:00:00:00 +0000``: the combined format's time, in UTC."""
    t = time.gmtime(moment)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


@contextmanager
def _atomic_output(out: Path) -> Iterator[IO[bytes]]:
    """A file that replaces ``out`` only once written whole, gzipped when ``out`` ends in ``.gz``."""
    with atomic_writer(out) as raw:
        if out.name.endswith(".gz"):
            # mtime=0 and no name: the same seed gives the same bytes, compressed or not. Level 1:
            # log lines compress well even so, and the writer stays fast.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as packed:
                yield cast(IO[bytes], packed)
        else:
            yield raw
