"""The configuration: one YAML file, checked once, turned into frozen dataclasses.

Every key is validated at load time (unknown keys, types, sizes, durations, URLs, CIDRs, cron
expressions) and every problem is reported in one :class:`ConfigError`, each with its key path.
Sizes become ``int`` bytes and durations ``timedelta`` here and nowhere else. A key given with
an empty value (YAML ``null``) counts as absent and takes its default. Relative paths are
resolved against the directory holding the configuration file (``parse_config``: ``base_dir``,
default the working directory), after ``~`` expansion. Nothing here touches the disk beyond
reading the file: whether paths exist is checked by whoever uses them.
"""

from __future__ import annotations

__all__ = [
    "CACHE_POLICIES",
    "CacheConfig",
    "CachePolicy",
    "Config",
    "DatabaseConfig",
    "IPMode",
    "IPModeRule",
    "IPModesConfig",
    "IPNetwork",
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
    "VotesConfig",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]

import dataclasses
import difflib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from sqlalchemy.engine import make_url

from pypimirror import __version__
from pypimirror.cron import make_trigger
from pypimirror.configvalues import (
    IPMode,
    IPNetwork,
    choice_parser,
    database_url_parser,
    describe_value,
    format_duration,
    int_parser,
    mask_url_password,
    parse_bool,
    parse_duration,
    parse_http_url,
    parse_ip_mode,
    parse_listen,
    parse_network,
    parse_positive_duration,
    parse_prefix,
    parse_proxy,
    parse_size,
    parse_text,
)
from pypimirror.errors import ConfigError, ConfigProblem

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml: same behaviour, slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

logger = logging.getLogger(__name__)

Listing = Literal["simple-json", "xmlrpc"]
LogFormat = Literal["mirror-json", "combined"]
CachePolicy = Literal["seed", "default"]

_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)

_LISTINGS: tuple[Listing, ...] = ("simple-json", "xmlrpc")
_LOG_FORMATS: tuple[LogFormat, ...] = ("mirror-json", "combined")
CACHE_POLICIES: tuple[CachePolicy, ...] = ("seed", "default")
_DEFAULT_BOTS = ("bandersnatch", "Googlebot", "bingbot", "YandexBot", "Baiduspider")
_HOURLY = timedelta(hours=1)
_DEFAULT_LISTEN = ":8080"
_DEFAULT_PREFIX = "/pypi"
_DEFAULT_SHUTDOWN_GRACE = timedelta(seconds=30)


# --------------------------------------------------------------------------- the dataclasses


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


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """Certificate and key for HTTPS; both or neither (neither: plain HTTP)."""

    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IPModeRule:
    """Clients inside ``network`` get ``mode`` for files we do not hold."""

    network: IPNetwork
    mode: IPMode


@dataclass(frozen=True, slots=True, kw_only=True)
class IPModesConfig:
    """Redirect (302) or proxy, per client network; the first matching rule wins."""

    default: IPMode = "302"
    rules: tuple[IPModeRule, ...] = ()


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
    policy: CachePolicy = "seed"
    tiers: tuple[Tier, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncConfig:
    """How the index sync and the cache downloads talk to the upstream."""

    retry: int = 3
    download_error_threshold: int = 5
    user_agent: str = f"pypimirror/{__version__}"
    concurrent_downloads: int = 4
    max_deletions: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """The access log; ``path`` None means no access log is written."""

    path: Path | None = None
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
    cache: Schedule = Schedule(interval=_HOURLY)
    jitter: timedelta = timedelta(minutes=2)
    run_on_start: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class VotesConfig:
    """The vote queue; ``bots`` are User-Agent substrings (matched case-insensitively) that never vote."""

    queue_size: int = 1000
    bots: tuple[str, ...] = _DEFAULT_BOTS


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    """The HTTP server's processes (they share the listening port)."""

    workers: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration, built once by :func:`load_config` and passed down."""

    listen: str = _DEFAULT_LISTEN
    repo_path: Path
    prefix: str = _DEFAULT_PREFIX
    node_id: str = field(default_factory=socket.gethostname)
    shutdown_grace: timedelta = _DEFAULT_SHUTDOWN_GRACE
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
        shown["database"]["url"] = make_url(self.database.url).render_as_string(hide_password=True)
        for key in ("pypi_url", "packages_url", "redirect_url", "proxy"):
            url = shown["upstream"][key]
            shown["upstream"][key] = None if url is None else mask_url_password(url)
        return shown


def _display_value(value: object) -> Any:
    """``value`` as plain data for :meth:`Config.to_display_dict`; dataclasses become dicts in field order."""
    if isinstance(value, Schedule):
        return value.to_text()
    if isinstance(value, IPModeRule):
        return {"cidr": str(value.network), "mode": value.mode}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _display_value(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_display_value(item) for item in value]
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


def _parse_schedule(raw: object) -> Schedule:
    """An interval (a duration) or a 5-field cron expression, validated as APScheduler reads it."""
    text = raw.strip() if isinstance(raw, str) else ""
    try:
        interval = parse_duration(text)
    except ValueError:
        interval = None
    if interval is not None:
        if not interval:
            raise ValueError(f"{text!r} must be longer than 0s")
        return Schedule(interval=interval)
    if len(text.split()) == 5:
        try:
            make_trigger(cron=text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid cron expression: {exc}") from None
        return Schedule(cron=text)
    raise ValueError(
        f"{describe_value(raw)} is neither a duration (e.g. 1h, 30m) "
        "nor a 5-field cron expression (e.g. '*/15 * * * *')"
    )


# --------------------------------------------------------------------------- the reader


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key_message(key: object, known: Collection[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(known)})"


class _Reader:
    """Reads one configuration tree, collecting every problem instead of stopping at the first.

    On a problem, a getter records it and returns a placeholder so that reading goes on;
    :func:`parse_config` raises before any placeholder can escape.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self._broken: set[str] = set()  # mappings of the wrong type: their keys are not "missing"

    def report(self, key_path: str, message: str) -> None:
        self.problems.append(ConfigProblem(key_path, message))

    def is_broken(self, path: str) -> bool:
        """Whether ``path`` lies in a mapping of the wrong type (so its keys are not "missing")."""
        return any(
            not broken or path == broken or path.startswith((f"{broken}.", f"{broken}["))
            for broken in self._broken
        )

    def section(self, data: object, path: str, keys: Collection[str]) -> Mapping[str, object]:
        """The mapping at ``path`` restricted to ``keys``; unknown keys and wrong types are reported."""
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            where = "" if path else " at the top level"
            self.report(path, f"expected a mapping{where}, got {describe_value(data)}")
            self._broken.add(path)
            return {}
        for key in data:
            if key not in keys:
                self.report(_join(path, str(key)), _unknown_key_message(key, keys))
        return {key: value for key, value in data.items() if key in keys}

    def entries(self, data: object, path: str) -> list[tuple[str, object]]:
        """The items of the list at ``path``, each with its own key path (``path[i]``)."""
        if data is None:
            return []
        if not isinstance(data, list):
            self.report(path, f"expected a list, got {describe_value(data)}")
            return []
        return [(f"{path}[{index}]", item) for index, item in enumerate(data)]

    def get(
        self, section: Mapping[str, object], path: str, key: str, parse: Callable[[object], _T], default: _T
    ) -> _T:
        raw = section.get(key)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            self.report(_join(path, key), str(exc))
            return default

    def require(
        self,
        section: Mapping[str, object],
        path: str,
        key: str,
        parse: Callable[[object], _T],
        placeholder: _T,
    ) -> _T:
        if section.get(key) is None and not self.is_broken(path):
            self.report(_join(path, key), "required key is missing")
        return self.get(section, path, key, parse, placeholder)

    def get_list(
        self,
        section: Mapping[str, object],
        path: str,
        key: str,
        parse: Callable[[object], _T],
        default: tuple[_T, ...],
    ) -> tuple[_T, ...]:
        raw = section.get(key)
        if raw is None:
            return default
        values = []
        for item_path, item in self.entries(raw, _join(path, key)):
            try:
                values.append(parse(item))
            except ValueError as exc:
                self.report(item_path, str(exc))
        return tuple(values)

    def parse_path(self, raw: object) -> Path:
        """An absolute path: ``~`` expanded, relative paths taken from ``base_dir``."""
        text = parse_text(raw)
        if "\0" in text:
            raise ValueError(f"{text!r} contains a NUL character")
        try:
            expanded = Path(text).expanduser()
        except RuntimeError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        return Path(os.path.normpath(self.base_dir / expanded))


# --------------------------------------------------------------------------- the sections

_TOP_KEYS = (
    "listen", "repo_path", "prefix", "node_id", "shutdown_grace", "database", "upstream", "tls",
    "trusted_proxies", "ip_modes", "cache", "sync", "log", "timeouts", "schedule", "votes", "serve",
)  # fmt: skip


def _read_database(reader: _Reader, data: object, repo_path: Path) -> DatabaseConfig:
    section = reader.section(data, "database", ("url",))
    default = f"sqlite:///{repo_path}/pypi-mirror.db"
    parse = database_url_parser(reader.base_dir)
    return DatabaseConfig(url=reader.get(section, "database", "url", parse, default))


def _read_upstream(reader: _Reader, data: object) -> UpstreamConfig:
    path = "upstream"
    section = reader.section(data, path, ("pypi_url", "packages_url", "redirect_url", "proxy", "listing"))
    pypi_url = reader.require(section, path, "pypi_url", parse_http_url, "")
    packages_url = reader.require(section, path, "packages_url", parse_http_url, "")
    return UpstreamConfig(
        pypi_url=pypi_url,
        packages_url=packages_url,
        redirect_url=reader.get(section, path, "redirect_url", parse_http_url, packages_url),
        proxy=reader.get(section, path, "proxy", parse_proxy, None),
        listing=reader.get(section, path, "listing", choice_parser(_LISTINGS), "simple-json"),
    )


def _read_tls(reader: _Reader, data: object) -> TLSConfig:
    section = reader.section(data, "tls", ("cert", "key"))
    cert = reader.get(section, "tls", "cert", reader.parse_path, None)
    key = reader.get(section, "tls", "key", reader.parse_path, None)
    for given, missing in (("cert", "key"), ("key", "cert")):
        if section.get(given) is not None and section.get(missing) is None:
            reader.report(f"tls.{missing}", f"required when tls.{given} is set")
    return TLSConfig(cert=cert, key=key)


def _read_ip_modes(reader: _Reader, data: object) -> IPModesConfig:
    section = reader.section(data, "ip_modes", ("default", "rules"))
    default = reader.get(section, "ip_modes", "default", parse_ip_mode, IPModesConfig().default)
    rules = []
    for rule_path, raw_rule in reader.entries(section.get("rules"), "ip_modes.rules"):
        rule = reader.section(raw_rule, rule_path, ("cidr", "mode"))
        network = reader.require(rule, rule_path, "cidr", parse_network, None)
        mode = reader.require(rule, rule_path, "mode", parse_ip_mode, None)
        if network is not None and mode is not None:
            rules.append(IPModeRule(network=network, mode=mode))
    return IPModesConfig(default=default, rules=tuple(rules))


def _read_tiers(reader: _Reader, data: object, repo_path: Path) -> tuple[Tier, ...]:
    """The configured tiers; overlapping tier directories (or one holding the repo) are refused."""
    tiers: list[tuple[str, Tier]] = []
    for tier_path, raw_tier in reader.entries(data, "cache.tiers"):
        section = reader.section(raw_tier, tier_path, ("path", "size_limit"))
        directory = reader.require(section, tier_path, "path", reader.parse_path, None)
        size_limit = reader.require(section, tier_path, "size_limit", parse_size, None)
        if directory is None or size_limit is None:
            continue
        if directory == repo_path or directory in repo_path.parents:
            reader.report(f"{tier_path}.path", f"'{directory}' holds repo_path; use a directory of its own")
        for other_path, other in tiers:
            if directory == other.path or directory in other.path.parents or other.path in directory.parents:
                reader.report(f"{tier_path}.path", f"'{directory}' overlaps {other_path} ('{other.path}')")
        tiers.append((tier_path, Tier(path=directory, size_limit=size_limit)))
    return tuple(tier for _, tier in tiers)


def _read_cache(reader: _Reader, data: object, repo_path: Path) -> CacheConfig:
    """The cache section; its byte budget is required: ``size_limit``, or ``tiers`` with limits."""
    path = "cache"
    keys = (
        "size_limit",
        "filesize_limit",
        "min_vote_count",
        "vote_window",
        "dedup_window",
        "size_db_ttl",
        "policy",
        "tiers",
    )
    section = reader.section(data, path, keys)
    defaults = CacheConfig(tiers=())
    size_limit = reader.get(section, path, "size_limit", parse_size, None)
    tiers = _read_tiers(reader, section.get("tiers"), repo_path)
    if section.get("tiers"):
        if section.get("size_limit") is not None:
            reader.report("cache.size_limit", "not allowed with cache.tiers: give each tier its size_limit")
    else:
        if section.get("size_limit") is None and not reader.is_broken(path):
            reader.report(
                "cache.size_limit",
                "required: the byte budget (or cache.tiers, each with path and size_limit)",
            )
        tiers = (Tier(path=repo_path / "packages", size_limit=size_limit or 0),)
    return CacheConfig(
        tiers=tiers,
        size_limit=size_limit,
        filesize_limit=reader.get(section, path, "filesize_limit", parse_size, None),
        min_vote_count=reader.get(section, path, "min_vote_count", int_parser(1), defaults.min_vote_count),
        vote_window=reader.get(section, path, "vote_window", parse_positive_duration, defaults.vote_window),
        dedup_window=reader.get(section, path, "dedup_window", parse_duration, defaults.dedup_window),
        size_db_ttl=reader.get(section, path, "size_db_ttl", parse_duration, defaults.size_db_ttl),
        policy=reader.get(section, path, "policy", choice_parser(CACHE_POLICIES), defaults.policy),
    )


def _read_sync(reader: _Reader, data: object) -> SyncConfig:
    path, defaults = "sync", SyncConfig()
    keys = ("retry", "download_error_threshold", "user_agent", "concurrent_downloads", "max_deletions")
    section = reader.section(data, path, keys)
    return SyncConfig(
        retry=reader.get(section, path, "retry", int_parser(1), defaults.retry),
        download_error_threshold=reader.get(
            section, path, "download_error_threshold", int_parser(1), defaults.download_error_threshold
        ),
        user_agent=reader.get(section, path, "user_agent", parse_text, defaults.user_agent),
        concurrent_downloads=reader.get(
            section, path, "concurrent_downloads", int_parser(1, 256), defaults.concurrent_downloads
        ),
        max_deletions=reader.get(section, path, "max_deletions", int_parser(0), defaults.max_deletions),
    )


def _read_log(reader: _Reader, data: object) -> LogConfig:
    section = reader.section(data, "log", ("path", "format"))
    return LogConfig(
        path=reader.get(section, "log", "path", reader.parse_path, None),
        format=reader.get(section, "log", "format", choice_parser(_LOG_FORMATS), LogConfig().format),
    )


def _read_timeouts(reader: _Reader, data: object) -> TimeoutsConfig:
    path, defaults = "timeouts", TimeoutsConfig()
    section = reader.section(data, path, ("read", "write", "idle", "upstream"))
    return TimeoutsConfig(
        read=reader.get(section, path, "read", parse_positive_duration, defaults.read),
        write=reader.get(section, path, "write", parse_positive_duration, defaults.write),
        idle=reader.get(section, path, "idle", parse_positive_duration, defaults.idle),
        upstream=reader.get(section, path, "upstream", parse_positive_duration, defaults.upstream),
    )


def _read_schedule(reader: _Reader, data: object) -> ScheduleConfig:
    path, defaults = "schedule", ScheduleConfig()
    section = reader.section(data, path, ("index_sync", "cache", "jitter", "run_on_start"))
    return ScheduleConfig(
        index_sync=reader.get(section, path, "index_sync", _parse_schedule, defaults.index_sync),
        cache=reader.get(section, path, "cache", _parse_schedule, defaults.cache),
        jitter=reader.get(section, path, "jitter", parse_duration, defaults.jitter),
        run_on_start=reader.get(section, path, "run_on_start", parse_bool, defaults.run_on_start),
    )


def _read_votes(reader: _Reader, data: object) -> VotesConfig:
    section = reader.section(data, "votes", ("queue_size", "bots"))
    return VotesConfig(
        queue_size=reader.get(section, "votes", "queue_size", int_parser(1), VotesConfig().queue_size),
        bots=reader.get_list(section, "votes", "bots", parse_text, _DEFAULT_BOTS),
    )


def _read_serve(reader: _Reader, data: object) -> ServeConfig:
    section = reader.section(data, "serve", ("workers",))
    return ServeConfig(
        workers=reader.get(section, "serve", "workers", int_parser(1, 64), ServeConfig().workers)
    )


def parse_config(data: object, source: str = "", base_dir: str | os.PathLike[str] | None = None) -> Config:
    """Check an already loaded YAML tree and build the :class:`Config`.

    ``source`` names the file in the error; relative paths are taken from ``base_dir`` (default:
    the working directory). Raises one :class:`ConfigError` listing every problem found.
    """
    reader = _Reader(Path(base_dir).absolute() if base_dir is not None else Path.cwd())
    top = reader.section(data, "", _TOP_KEYS)
    repo_path = reader.require(top, "", "repo_path", reader.parse_path, Path("/"))
    config = Config(
        listen=reader.get(top, "", "listen", parse_listen, _DEFAULT_LISTEN),
        repo_path=repo_path,
        prefix=reader.get(top, "", "prefix", parse_prefix, _DEFAULT_PREFIX),
        node_id=reader.get(top, "", "node_id", parse_text, socket.gethostname()),
        shutdown_grace=reader.get(top, "", "shutdown_grace", parse_duration, _DEFAULT_SHUTDOWN_GRACE),
        database=_read_database(reader, top.get("database"), repo_path),
        upstream=_read_upstream(reader, top.get("upstream")),
        tls=_read_tls(reader, top.get("tls")),
        trusted_proxies=reader.get_list(top, "", "trusted_proxies", parse_network, ()),
        ip_modes=_read_ip_modes(reader, top.get("ip_modes")),
        cache=_read_cache(reader, top.get("cache"), repo_path),
        sync=_read_sync(reader, top.get("sync")),
        log=_read_log(reader, top.get("log")),
        timeouts=_read_timeouts(reader, top.get("timeouts")),
        schedule=_read_schedule(reader, top.get("schedule")),
        votes=_read_votes(reader, top.get("votes")),
        serve=_read_serve(reader, top.get("serve")),
    )
    if reader.problems:
        raise ConfigError(reader.problems, source=source)
    return config


# --------------------------------------------------------------------------- the file


class _StrictLoader(_BaseLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"not valid YAML (line {mark.line + 1}, column {mark.column + 1}): {exc.problem}"
    return f"not valid YAML: {exc}"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, check and build the configuration in the YAML file at ``path``.

    Relative paths inside the file are taken from the file's directory. A missing or unreadable
    file, invalid YAML and every bad key raise :class:`ConfigError` naming the file.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as stream:
            text = stream.read()
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read the configuration file: {exc.strerror or exc}")
        raise ConfigError([problem], source=source) from exc
    try:
        data: object = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", _describe_yaml_error(exc))], source=source) from exc
    config = parse_config(data, source=source, base_dir=Path(source).absolute().parent)
    logger.debug("configuration loaded from %s", source)
    return config
