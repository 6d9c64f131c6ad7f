"""The configuration as the program sees it: one frozen dataclass per section of the YAML file.

This module is the model only: :func:`pypimirror.configreader.load_config` reads and checks a
file into it, once, in the composition root, which passes it down. A section's keys in the
file are its dataclass's fields (:func:`section_keys`), so a key is declared once, here, with
its type and default; the reader gives it a parser. The values are already checked and typed:
sizes are ``int`` bytes, durations ``timedelta``, paths absolute, URLs without a trailing
``/``, so code that receives a section uses its values as they are.
"""

from __future__ import annotations

__all__ = [
    "AdvisoriesConfig",
    "AdvisoryMode",
    "AdvisoryWaiver",
    "CacheConfig",
    "CachePolicy",
    "Config",
    "DatabaseConfig",
    "IPMode",
    "IPModeRule",
    "IPModesConfig",
    "IPNetwork",
    "LOG_TO_STDOUT",
    "Listing",
    "LogConfig",
    "LogFormat",
    "Schedule",
    "ScheduleConfig",
    "ServeConfig",
    "SyncConfig",
    "TLSConfig",
    "Tier",
    "TimeoutsConfig",
    "UpstreamConfig",
    "ViewConfig",
    "VoteCounting",
    "VotesConfig",
    "section_keys",
    "yaml_key",
]

import dataclasses
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

from pypimirror import __version__
from pypimirror.configvalues import IPMode, IPNetwork, format_duration
from pypimirror.urlmask import mask_url

Listing = Literal["simple-json", "xmlrpc"]
LogFormat = Literal["mirror-json", "combined"]
CachePolicy = Literal["seed", "default"]
AdvisoryMode = Literal["off", "flag", "block"]

LOG_TO_STDOUT: Final = "-"  # log.path that sends the access log to stdout
_HOURLY = timedelta(hours=1)


def yaml_key(item: dataclasses.Field[Any]) -> str:
    """The key a field is written as in the file: its name, unless its metadata names another."""
    return str(item.metadata.get("key", item.name))


def section_keys(model: type[Any]) -> tuple[str, ...]:
    """The keys a section accepts in the file: its dataclass's fields, in their order."""
    return tuple(yaml_key(item) for item in dataclasses.fields(model))


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """Where votes, serials and job runs live: any SQLAlchemy URL."""

    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    """The index we mirror. URLs carry no trailing ``/``; ``proxy`` None means a direct connection."""

    pypi_url: str
    packages_url: str
    redirect_url: str
    proxy: str | None = None
    listing: Listing = "simple-json"

    def file_url(self, relpath: str) -> str:
        """Where the upstream serves the package file ``ab/cd/<hash>/<filename>``, percent-encoded."""
        return f"{self.packages_url}/{quote(relpath)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """Certificate and key for HTTPS; both or neither (neither: plain HTTP)."""

    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IPModeRule:
    """Clients inside ``network`` get ``mode`` for files we do not hold."""

    network: IPNetwork = field(metadata={"key": "cidr"})
    mode: IPMode


@dataclass(frozen=True, slots=True, kw_only=True)
class IPModesConfig:
    """Redirect (302) or proxy, per client network; the first matching rule wins."""

    default: IPMode = "302"
    rules: tuple[IPModeRule, ...] = ()


class VoteCounting(NamedTuple):
    """How a cache policy counts the recorded votes (:meth:`CacheConfig.counting_of`)."""

    #: How far back votes count.
    window: timedelta
    #: Distinct client networks only (``seed``), or every vote (``default``).
    distinct: bool
    #: The fewest a file needs to compete for room.
    floor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    """One cache directory and its byte budget; tiers are ordered hottest first."""

    path: Path
    size_limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Which package files are kept, and where.

    ``tiers`` is always the effective list: the configured tiers, or the single implicit tier
    ``{repo_path}/packages`` holding ``size_limit`` bytes. ``filesize_limit`` None means no
    per-file limit.
    """

    size_limit: int | None = None
    filesize_limit: int | None = None
    min_vote_count: int = 2
    vote_window: timedelta = timedelta(days=7)
    dedup_window: timedelta = timedelta(minutes=5)
    size_db_ttl: timedelta = timedelta(days=2)
    #: Bytes of cached files re-hashed per run, least recently verified first (0: sizes only).
    verify_bytes_per_run: int = 4 * 1024**3
    #: How files are ranked for the cache: ``default`` (votes per byte, see
    #: docs/cache-policy.md) or ``seed`` (distinct networks, as the original mirror; only it
    #: uses ``min_vote_count``).
    policy: CachePolicy = "default"
    #: How far back the ``default`` policy counts votes (``seed`` counts within ``vote_window``):
    #: a month of votes tells a steadily used file's worth better than a week, while the
    #: size-blind seed rule only lets more large files reach its threshold with it.
    score_window: timedelta = timedelta(days=30)
    tiers: tuple[Tier, ...]

    @property
    def counting_window(self) -> timedelta:
        """How far back votes count under ``policy``, and so how long the cache job keeps them."""
        return self.counting_of(self.policy).window

    def counting_of(self, policy: CachePolicy) -> VoteCounting:
        """How ``policy`` counts votes: ``seed`` the distinct networks within ``vote_window``,
        ``min_vote_count`` of them at least; ``default`` every vote within ``score_window`` (or
        ``vote_window`` if longer), of every voted file. The cache job and the simulator (which
        replays both policies) both count so."""
        if policy == "seed":
            return VoteCounting(self.vote_window, distinct=True, floor=self.min_vote_count)
        return VoteCounting(max(self.vote_window, self.score_window), distinct=False, floor=1)

    @property
    def tier_roots(self) -> tuple[Path, ...]:
        """Each tier's directory, hottest first (index ``i`` is tier ``i`` everywhere)."""
        return tuple(tier.path for tier in self.tiers)

    @property
    def tier_limits(self) -> tuple[int, ...]:
        """Each tier's byte budget, hottest first."""
        return tuple(tier.size_limit for tier in self.tiers)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncConfig:
    """How the index sync and the cache downloads talk to the upstream."""

    retry: int = 3
    download_error_threshold: int = 5
    user_agent: str = f"pypimirror/{__version__}"
    concurrent_downloads: int = 4
    max_deletions: int = 1000
    #: A run in which more than this share of its projects failed is a failed run.
    max_error_share: float = 0.5
    #: Record the index history (first seen, yanks, removals, status changes) for ``+asof``;
    #: a run without it ends the history, and the next run with it starts a new one.
    record_history: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """The access log; ``path`` None means no access log is written, ``"-"`` the process's stdout.

    Stdout is for containers, whose runtime collects a process's output; a file suits a host
    with logrotate.
    """

    path: Path | Literal["-"] | None = None
    format: LogFormat = "mirror-json"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutsConfig:
    """HTTP timeouts. ``write`` and ``upstream`` bound stalls, never a whole (large) transfer."""

    read: timedelta = timedelta(seconds=30)
    write: timedelta = timedelta(seconds=120)
    idle: timedelta = timedelta(seconds=60)
    upstream: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a job runs: every ``interval``, or at the times of a 5-field ``cron`` expression."""

    interval: timedelta | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("a schedule has exactly one of interval and cron")

    def to_text(self) -> str:
        """The schedule as written in the configuration (``1h``, ``*/15 * * * *``)."""
        return format_duration(self.interval) if self.interval is not None else str(self.cron)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleConfig:
    """The embedded scheduler's jobs; ``jitter`` delays each run by a random amount up to it."""

    index_sync: Schedule = Schedule(interval=_HOURLY)
    advisories: Schedule = Schedule(interval=_HOURLY)
    cache: Schedule = Schedule(interval=_HOURLY)
    jitter: timedelta = timedelta(minutes=2)
    run_on_start: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class VotesConfig:
    """The vote queue; ``bots`` are User-Agent substrings (matched case-insensitively) that never vote."""

    queue_size: int = 1000
    bots: tuple[str, ...] = ("bandersnatch", "Googlebot", "bingbot", "YandexBot", "Baiduspider")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvisoryWaiver:
    """An advisory the policy ignores until the end of the day ``until`` (UTC), and why."""

    id: str
    until: date
    reason: str

    def applies_on(self, day: date) -> bool:
        return day <= self.until


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvisoriesConfig:
    """Where the OSV advisories come from and what the mirror does with them.

    ``source`` is an OSV export: a local path (a zip of OSV JSON records, or a directory of
    OSV JSON/YAML records), or an http(s) URL of such a zip. None: no advisory sync.
    ``mode`` ``off`` still keeps the advisories for the OSV API; ``audit`` only logs what the
    policy would do.
    """

    source: Path | str | None = None
    mode: AdvisoryMode = "off"
    waivers: tuple[AdvisoryWaiver, ...] = ()
    audit: bool = False

    @property
    def source_is_url(self) -> bool:
        return isinstance(self.source, str)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    """The HTTP server's processes (they share the listening port) and what each may hold.

    ``max_connections`` is per process (each has its own descriptor limit); None derives it
    from that limit when the process starts. ``buffer_budget`` is for the whole server: each of
    ``workers`` processes gets an equal share.
    """

    workers: int = 1
    max_connections: int | None = None
    buffer_budget: int = 256 * 1024**2


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewConfig:
    """One named view, served at ``{prefix}/+view/{name}/simple/`` (docs/views.md).

    Files younger than ``min_age`` or uploaded after ``not_after`` (a UTC moment) are left out,
    except in projects whose normalized name matches one of the ``exempt`` shell patterns.
    At least one of the two limits is set.
    """

    min_age: timedelta | None = None
    exempt: tuple[str, ...] = ()
    not_after: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration, built once by :func:`~pypimirror.configreader.load_config` and passed down."""

    listen: str = ":8080"
    repo_path: Path
    prefix: str = "/pypi"
    node_id: str = field(default_factory=socket.gethostname)
    shutdown_grace: timedelta = timedelta(seconds=30)
    database: DatabaseConfig
    upstream: UpstreamConfig
    tls: TLSConfig = TLSConfig()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    ip_modes: IPModesConfig = IPModesConfig()
    cache: CacheConfig
    sync: SyncConfig = SyncConfig()
    log: LogConfig = LogConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    votes: VotesConfig = VotesConfig()
    serve: ServeConfig = ServeConfig()
    advisories: AdvisoriesConfig = AdvisoriesConfig()
    views: Mapping[str, ViewConfig] = field(default_factory=dict)

    @property
    def listen_address(self) -> tuple[str, int]:
        """``listen`` as (host, port) for binding; host "" means every interface."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def to_display_dict(self) -> dict[str, Any]:
        """The effective configuration as plain YAML/JSON values (keys as in the file), passwords masked.

        Sizes are ints, durations and schedules are text such as ``1h30m``, paths are strings.
        """
        shown: dict[str, Any] = _display_value(self)
        shown["database"]["url"] = mask_url(self.database.url)
        for key in ("pypi_url", "packages_url", "redirect_url", "proxy"):
            url = shown["upstream"][key]
            shown["upstream"][key] = None if url is None else mask_url(url)
        if self.advisories.source_is_url:
            shown["advisories"]["source"] = mask_url(str(self.advisories.source))
        return shown


def _display_value(value: object) -> Any:
    """``value`` as plain data for :meth:`Config.to_display_dict`; dataclasses become dicts in field order."""
    if isinstance(value, Schedule):
        return value.to_text()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {yaml_key(item): _display_value(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_display_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _display_value(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network | date):
        return str(value)
    return value
