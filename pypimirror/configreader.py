"""Reading the configuration: one YAML file, checked once, turned into the frozen dataclasses of
:mod:`pypimirror.config` (the model; this module is the reader, used by the composition root).

A section's accepted keys are its dataclass's fields; its reader function here gives each key
a parser (:meth:`_Reader.read`), and a key absent from the file takes the dataclass's default.
Every key is validated at load time (unknown keys, types, sizes, durations, URLs, CIDRs, cron
expressions) and every problem is reported in one :class:`ConfigError`, each with its key path.
Every value has an upper bound too, so nothing that passes here fails later. Sizes become
``int`` bytes and durations ``timedelta`` here and nowhere else. A key given with an empty
value (YAML ``null``) counts as absent and takes its default. Relative paths are resolved
against the directory holding the configuration file (``parse_config``: ``base_dir``, default
the working directory), after ``~`` expansion.

Paths that must not overlap are refused (:func:`_read_tiers`, :func:`_check_files`): a cache
tier holding the repository, inside its page directories (the index sync deletes whatever it
does not know there) or overlapping another tier, and a file the mirror writes or reads
(database, access log, TLS files) inside a tier or a page directory. Paths are compared after following symlinks
(``Path.resolve``, which reads links but needs nothing to exist); beyond that and reading the
file, nothing here touches the disk: whether paths exist is checked by whoever uses them.
"""

from __future__ import annotations

__all__ = ["load_config", "parse_config"]

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

import yaml
from sqlalchemy.engine import make_url

from pypimirror.acceptor import MAX_CONNECTIONS
from pypimirror.config import (
    LOG_TO_STDOUT,
    AdvisoriesConfig,
    AdvisoryMode,
    AdvisoryWaiver,
    CacheConfig,
    CachePolicy,
    Config,
    DatabaseConfig,
    IPModeRule,
    IPModesConfig,
    Listing,
    LogConfig,
    LogFormat,
    Schedule,
    ScheduleConfig,
    ServeConfig,
    SyncConfig,
    Tier,
    TimeoutsConfig,
    TLSConfig,
    UpstreamConfig,
    ViewConfig,
    VotesConfig,
    section_keys,
    yaml_key,
)
from pypimirror.configvalues import (
    DurationTooLong,
    choice_parser,
    database_url_parser,
    describe_value,
    duration_parser,
    int_parser,
    parse_bool,
    parse_header_text,
    parse_http_url,
    parse_ip_mode,
    parse_listen,
    parse_network,
    parse_prefix,
    parse_proxy,
    parse_size,
    parse_share,
    parse_text,
)
from pypimirror.cron import make_trigger
from pypimirror.errors import ConfigError, ConfigProblem
from pypimirror.storage import RepoLayout
from pypimirror.views import VIEW_NAME, parse_age, parse_moment

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml: same behaviour, slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
# Upper bounds of durations and counts, far above any sane setting (see configvalues: values
# that pass must not fail later).
_MAX_GRACE = timedelta(hours=1)
_MAX_WINDOW = timedelta(days=366)  # vote_window, score_window, dedup_window, size_db_ttl, a schedule's interval
_MAX_TIMEOUT = timedelta(days=1)
_MAX_JITTER = timedelta(days=1)
_MAX_RETRY = 100
_MAX_ERROR_THRESHOLD = 1_000_000
_MAX_MIN_VOTE_COUNT = 1_000_000  # distinct client networks
_MAX_QUEUE_SIZE = 1_000_000  # votes held in memory, a few hundred bytes each
_MAX_LIST = 1000  # entries of a list (tiers, rules, networks, bots)
_MAX_NODE_ID = 255
_MIN_BUFFER_BUDGET = 1024**2
_MAX_BUFFER_BUDGET = 1024**4


# --------------------------------------------------------------------------- value parsers


def _parse_schedule(raw: object) -> Schedule:
    """An interval (a duration) or a 5-field cron expression, validated as APScheduler reads it."""
    text = raw.strip() if isinstance(raw, str) else ""
    try:
        interval = duration_parser(_MAX_WINDOW)(text)
    except DurationTooLong:
        raise
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


def _parse_node_id(raw: object) -> str:
    """This node's name in the database and in status output: one line of at most 255 characters."""
    text = parse_text(raw)
    if len(text) > _MAX_NODE_ID:
        raise ValueError(f"is {len(text)} characters long (at most {_MAX_NODE_ID})")
    return text


# --------------------------------------------------------------------------- the reader


@dataclass(frozen=True, slots=True)
class _ListOf(Generic[_T]):
    """The parser of a key whose value is a list: ``parse`` reads each item, reported by its index."""

    parse: Callable[[object], _T]


#: How a key's value is read: a parser of the raw YAML value, or of each item of a list.
_Parser = Callable[[object], object] | _ListOf[Any]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key_message(key: object, known: Collection[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(known)})"


class _Reader:
    """Reads one configuration tree, collecting every problem instead of stopping at the first.

    On a problem, :meth:`read` records it and leaves the key to its default (a required key
    gets a placeholder) so that reading goes on; :func:`parse_config` raises before any
    placeholder can escape.
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

    def read(
        self,
        data: object,
        path: str,
        model: type[Any],
        parsers: Mapping[str, _Parser],
        *,
        required: Mapping[str, object] | None = None,
        custom: Collection[str] = (),
    ) -> tuple[Mapping[str, object], dict[str, Any]]:
        """The section at ``path`` read as ``model``: its raw keys, and its values by field name.

        ``parsers`` reads each key (as written in the file); ``custom`` names the keys the caller
        reads itself from the raw keys (nested sections, keys that depend on another). Together
        they must be exactly the model's keys: a field without a parser raises ``TypeError`` on
        every read instead of being ignored. A key that is absent, null or bad is left out of
        the values so that ``model(**values)`` gives it the dataclass's default (a bad one is
        reported); a missing ``required`` key is reported and given its placeholder.
        """
        keys = section_keys(model)
        unread = [key for key in keys if key not in parsers and key not in custom]
        unknown = sorted({*parsers, *custom} - set(keys))
        if unread or unknown or not set(parsers).isdisjoint(custom):
            raise TypeError(f"{model.__name__}: keys without a parser {unread}, parsers of no key {unknown}")
        section = self.section(data, path, keys)
        required = required or {}
        values: dict[str, Any] = {}
        for item in dataclasses.fields(model):
            key = yaml_key(item)
            parse = parsers.get(key)
            if parse is None:
                continue
            raw = section.get(key)
            if raw is None:
                if key in required and not self.is_broken(path):
                    self.report(_join(path, key), "required key is missing")
            else:
                try:
                    values[item.name] = self._value(raw, _join(path, key), parse)
                except ValueError as exc:
                    self.report(_join(path, key), str(exc))
            if key in required:
                values.setdefault(item.name, required[key])
        return section, values

    def build(self, data: object, path: str, model: type[_T], parsers: Mapping[str, _Parser]) -> _T:
        """The section at ``path`` as ``model``, for a section whose every key has a parser."""
        return model(**self.read(data, path, model, parsers)[1])

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
        if len(data) > _MAX_LIST:
            self.report(path, f"has {len(data)} entries (at most {_MAX_LIST})")
            return []
        return [(f"{path}[{index}]", item) for index, item in enumerate(data)]

    def _value(self, raw: object, key_path: str, parse: _Parser) -> object:
        """``raw`` parsed; a list item by item, each bad item reported with its index and left out."""
        if not isinstance(parse, _ListOf):
            return parse(raw)
        values = []
        for item_path, item in self.entries(raw, key_path):
            try:
                values.append(parse.parse(item))
            except ValueError as exc:
                self.report(item_path, str(exc))
        return tuple(values)

    def parse_path(self, raw: object) -> Path:
        """An absolute path: ``~`` expanded, relative paths taken from ``base_dir``."""
        text = parse_text(raw)
        try:
            expanded = Path(text).expanduser()
        except RuntimeError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        return Path(os.path.normpath(self.base_dir / expanded))


# --------------------------------------------------------------------------- the sections

#: The top-level keys that hold a section of their own (each read by its ``_read_*`` function).
_SECTIONS = (
    "database", "upstream", "tls", "ip_modes", "cache", "sync", "log", "timeouts", "schedule", "votes", "serve",
    "advisories",
    "views",
)  # fmt: skip


def _read_database(reader: _Reader, data: object, repo_path: Path) -> DatabaseConfig:
    _, values = reader.read(data, "database", DatabaseConfig, {"url": database_url_parser(reader.base_dir)})
    return DatabaseConfig(**{"url": f"sqlite:///{repo_path}/pypi-mirror.db", **values})


def _read_upstream(reader: _Reader, data: object) -> UpstreamConfig:
    parsers: dict[str, _Parser] = {
        "pypi_url": parse_http_url,
        "packages_url": parse_http_url,
        "redirect_url": parse_http_url,
        "proxy": parse_proxy,
        "listing": choice_parser(get_args(Listing)),
    }
    _, values = reader.read(data, "upstream", UpstreamConfig, parsers, required={"pypi_url": "", "packages_url": ""})
    return UpstreamConfig(**{"redirect_url": values["packages_url"], **values})


def _read_tls(reader: _Reader, data: object) -> TLSConfig:
    section, values = reader.read(data, "tls", TLSConfig, {"cert": reader.parse_path, "key": reader.parse_path})
    for given, missing in (("cert", "key"), ("key", "cert")):
        if section.get(given) is not None and section.get(missing) is None:
            reader.report(f"tls.{missing}", f"required when tls.{given} is set")
    return TLSConfig(**values)


def _read_ip_modes(reader: _Reader, data: object) -> IPModesConfig:
    section, values = reader.read(data, "ip_modes", IPModesConfig, {"default": parse_ip_mode}, custom=("rules",))
    rules = []
    rule_parsers: dict[str, _Parser] = {"cidr": parse_network, "mode": parse_ip_mode}
    for rule_path, raw_rule in reader.entries(section.get("rules"), "ip_modes.rules"):
        _, rule = reader.read(raw_rule, rule_path, IPModeRule, rule_parsers, required={"cidr": None, "mode": None})
        if None not in rule.values():
            rules.append(IPModeRule(**rule))
    return IPModesConfig(**values, rules=tuple(rules))


def _read_tiers(reader: _Reader, data: object, repo_path: Path) -> tuple[Tier, ...]:
    """The configured tiers; a tier holding the repo, inside its page directories or overlapping
    another tier is refused (symlinks followed)."""
    tiers: list[tuple[str, Tier]] = []
    repo = _resolved(repo_path)
    parsers: dict[str, _Parser] = {"path": reader.parse_path, "size_limit": parse_size}
    for tier_path, raw_tier in reader.entries(data, "cache.tiers"):
        _, values = reader.read(raw_tier, tier_path, Tier, parsers, required={"path": None, "size_limit": None})
        if None in values.values():
            continue
        tier = Tier(**values)
        resolved = _resolved(tier.path)
        shown = _shown(tier.path, resolved)
        if _within(resolved, repo):
            reader.report(f"{tier_path}.path", f"{shown} holds repo_path; use a directory of its own")
        for pages in _page_dirs(repo):
            if _within(pages, resolved):
                reader.report(
                    f"{tier_path}.path",
                    f"{shown} is inside repo_path's {pages.name}/, whose entries the index sync "
                    "deletes when it does not list them; use a directory of its own",
                )
        for other_path, other in tiers:
            if _within(resolved, _resolved(other.path)) or _within(_resolved(other.path), resolved):
                reader.report(f"{tier_path}.path", f"{shown} overlaps {other_path} ('{other.path}')")
        tiers.append((tier_path, tier))
    return tuple(tier for _, tier in tiers)


def _check_files(reader: _Reader, config: Config) -> None:
    """Refuse a file the mirror keeps (database, access log, TLS) inside a cache tier or a page
    directory, whose contents jobs delete and replace, or one file given for two of them."""
    files: list[tuple[str, Path]] = []
    database = make_url(config.database.url)
    if database.get_backend_name() == "sqlite" and database.database and not database.database.startswith("file:"):
        files.append(("database.url", Path(database.database)))
    for key, given in (("log.path", config.log.path), ("tls.cert", config.tls.cert), ("tls.key", config.tls.key)):
        if given is not None and given != LOG_TO_STDOUT:
            files.append((key, Path(given)))
    repo = _resolved(config.repo_path)
    owners = [(f"repo_path's {pages.name}/", pages) for pages in _page_dirs(repo)]
    owners += [(f"the cache tier '{root}'", _resolved(root)) for root in config.cache.tier_roots]
    seen: list[tuple[str, Path]] = []
    for key, path in files:
        resolved = _resolved(path)
        shown = _shown(path, resolved)
        for owner, directory in owners:
            if _within(directory, resolved):
                reader.report(key, f"{shown} is inside {owner}, where jobs delete and replace files")
        for other_key, other in seen:
            if resolved == other and {key, other_key} != {"tls.cert", "tls.key"}:  # a PEM may hold both
                reader.report(key, f"{shown} is also {other_key}")
        seen.append((key, resolved))


def _page_dirs(repo: Path) -> tuple[Path, Path]:
    """The directories under repo_path that the index sync owns."""
    layout = RepoLayout(repo)
    return layout.simple_dir, layout.json_dir


def _resolved(path: Path) -> Path:
    """``path`` with symlinks followed as far as it exists; as given if they loop."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _within(directory: Path, path: Path) -> bool:
    """Whether ``path`` is ``directory`` or inside it (both resolved)."""
    return path == directory or directory in path.parents


def _shown(path: Path, resolved: Path) -> str:
    return f"'{path}'" if path == resolved else f"'{path}' (which is '{resolved}')"


def _read_cache(reader: _Reader, data: object, repo_path: Path) -> CacheConfig:
    """The cache section; its byte budget is required: ``size_limit``, or ``tiers`` with limits."""
    path = "cache"
    parsers: dict[str, _Parser] = {
        "size_limit": parse_size,
        "filesize_limit": parse_size,
        "min_vote_count": int_parser(1, _MAX_MIN_VOTE_COUNT),
        "vote_window": duration_parser(_MAX_WINDOW, positive=True),
        "dedup_window": duration_parser(_MAX_WINDOW),
        "size_db_ttl": duration_parser(_MAX_WINDOW),
        "verify_bytes_per_run": parse_size,
        "policy": choice_parser(get_args(CachePolicy)),
        "score_window": duration_parser(_MAX_WINDOW, positive=True),
    }
    section, values = reader.read(data, path, CacheConfig, parsers, custom=("tiers",))
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
        tiers = (Tier(path=repo_path / "packages", size_limit=values.get("size_limit") or 0),)
    return CacheConfig(**values, tiers=tiers)


def _read_sync(reader: _Reader, data: object) -> SyncConfig:
    parsers: dict[str, _Parser] = {
        "retry": int_parser(1, _MAX_RETRY),
        "download_error_threshold": int_parser(1, _MAX_ERROR_THRESHOLD),
        "user_agent": parse_header_text,
        "concurrent_downloads": int_parser(1, 256),
        "max_deletions": int_parser(0),
        "max_error_share": parse_share,
        "record_history": parse_bool,
    }
    return reader.build(data, "sync", SyncConfig, parsers)


def _log_path_parser(reader: _Reader) -> Callable[[object], Path | Literal["-"]]:
    """``"-"`` as itself (stdout), any other text as a path."""

    def parse(raw: object) -> Path | Literal["-"]:
        return LOG_TO_STDOUT if raw == LOG_TO_STDOUT else reader.parse_path(raw)

    return parse


def _read_log(reader: _Reader, data: object) -> LogConfig:
    parsers: dict[str, _Parser] = {"path": _log_path_parser(reader), "format": choice_parser(get_args(LogFormat))}
    return reader.build(data, "log", LogConfig, parsers)


def _read_timeouts(reader: _Reader, data: object) -> TimeoutsConfig:
    """Every timeout is a positive duration of at most a day."""
    parse = duration_parser(_MAX_TIMEOUT, positive=True)
    return reader.build(data, "timeouts", TimeoutsConfig, dict.fromkeys(section_keys(TimeoutsConfig), parse))


def _read_schedule(reader: _Reader, data: object) -> ScheduleConfig:
    # Every job's key is a Schedule, read alike: a new job's key needs no line here.
    parsers: dict[str, _Parser] = {
        f.name: _parse_schedule for f in fields(ScheduleConfig) if isinstance(f.default, Schedule)
    }
    parsers.update(jitter=duration_parser(_MAX_JITTER), run_on_start=parse_bool)
    return reader.build(data, "schedule", ScheduleConfig, parsers)


def _read_votes(reader: _Reader, data: object) -> VotesConfig:
    parsers: dict[str, _Parser] = {"queue_size": int_parser(1, _MAX_QUEUE_SIZE), "bots": _ListOf(parse_text)}
    return reader.build(data, "votes", VotesConfig, parsers)


def _read_serve(reader: _Reader, data: object) -> ServeConfig:
    parsers: dict[str, _Parser] = {
        "workers": int_parser(1, 64),
        "max_connections": int_parser(1, MAX_CONNECTIONS),
        "buffer_budget": _parse_buffer_budget,
    }
    return reader.build(data, "serve", ServeConfig, parsers)


def _read_advisories(reader: _Reader, data: object) -> AdvisoriesConfig:
    """The advisory section; a policy mode other than ``off`` needs a ``source`` to apply."""
    parsers: dict[str, _Parser] = {
        "source": _advisory_source_parser(reader),
        "mode": _parse_advisory_mode,
        "audit": parse_bool,
    }
    section, values = reader.read(data, "advisories", AdvisoriesConfig, parsers, custom=("waivers",))
    waivers = []
    waiver_parsers: dict[str, _Parser] = {"id": parse_text, "until": _parse_day, "reason": parse_text}
    required = dict.fromkeys(("id", "until", "reason"))
    for waiver_path, raw_waiver in reader.entries(section.get("waivers"), "advisories.waivers"):
        _, waiver = reader.read(raw_waiver, waiver_path, AdvisoryWaiver, waiver_parsers, required=required)
        if None not in waiver.values():
            waivers.append(AdvisoryWaiver(**waiver))
    if values.get("mode", "off") != "off" and values.get("source") is None and section.get("source") is None:
        reader.report("advisories.source", f"required when advisories.mode is {values['mode']}")
    return AdvisoriesConfig(**values, waivers=tuple(waivers))


def _advisory_source_parser(reader: _Reader) -> Callable[[object], Path | str]:
    """An http(s) URL as itself, any other text as a path."""

    def parse(raw: object) -> Path | str:
        if isinstance(raw, str) and raw.strip().lower().startswith(("http://", "https://")):
            return parse_http_url(raw)
        return reader.parse_path(raw)

    return parse


def _parse_advisory_mode(raw: object) -> AdvisoryMode:
    """``off``, ``flag`` or ``block``; YAML 1.1 reads a bare ``off`` as false, which means off too."""
    return "off" if raw is False else choice_parser(get_args(AdvisoryMode))(raw)


def _parse_day(raw: object) -> date:
    """A calendar day, ``2026-03-31`` (YAML reads it as a date already; a quoted one is text)."""
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(parse_text(raw))
    except ValueError:
        raise ValueError(f"{describe_value(raw)} is not a day such as 2026-03-31") from None


def _read_views(reader: _Reader, data: object) -> dict[str, ViewConfig]:
    """The named views: a mapping of name (as it stands in ``+view/{name}``) to its rules."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        reader.report("views", f"expected a mapping of view names, got {describe_value(data)}")
        return {}
    parsers: dict[str, _Parser] = {
        "min_age": parse_age,
        "exempt": _ListOf(_parse_exempt_pattern),
        "not_after": parse_moment,
    }
    views: dict[str, ViewConfig] = {}
    for name, raw in data.items():
        path = f"views.{name}"
        if not isinstance(name, str) or VIEW_NAME.fullmatch(name) is None:
            reader.report(path, "a view name is 1-64 of a-z 0-9 . _ - (starting and ending with a letter or digit)")
            continue
        section, values = reader.read(raw, path, ViewConfig, parsers)
        if section.get("min_age") is None and section.get("not_after") is None and not reader.is_broken(path):
            reader.report(path, "set min_age, not_after or both (a view without either leaves nothing out)")
        views[name] = ViewConfig(**values)
    return views


def _parse_exempt_pattern(raw: object) -> str:
    """A shell pattern over normalized project names, itself normalized (``Internal_*`` is ``internal-*``)."""
    return re.sub(r"[-_.]+", "-", parse_text(raw).strip()).lower()


def _parse_buffer_budget(raw: object) -> int:
    """A size from 1 MiB (one full chunk) to 1 TiB."""
    size = parse_size(raw)
    if not _MIN_BUFFER_BUDGET <= size <= _MAX_BUFFER_BUDGET:
        raise ValueError(f"{raw!r} is out of range (must be from 1m to 1t)")
    return size


def parse_config(data: object, source: str = "", base_dir: str | os.PathLike[str] | None = None) -> Config:
    """Check an already loaded YAML tree and build the :class:`Config`.

    ``source`` names the file in the error; relative paths are taken from ``base_dir`` (default:
    the working directory). Raises one :class:`ConfigError` listing every problem found.
    """
    reader = _Reader(Path(base_dir).absolute() if base_dir is not None else Path.cwd())
    parsers: dict[str, _Parser] = {
        "listen": parse_listen,
        "repo_path": reader.parse_path,
        "prefix": parse_prefix,
        "node_id": _parse_node_id,
        "shutdown_grace": duration_parser(_MAX_GRACE),
        "trusted_proxies": _ListOf(parse_network),
    }
    top, values = reader.read(data, "", Config, parsers, required={"repo_path": Path("/")}, custom=_SECTIONS)
    repo_path = values["repo_path"]
    config = Config(
        **values,
        database=_read_database(reader, top.get("database"), repo_path),
        upstream=_read_upstream(reader, top.get("upstream")),
        tls=_read_tls(reader, top.get("tls")),
        ip_modes=_read_ip_modes(reader, top.get("ip_modes")),
        cache=_read_cache(reader, top.get("cache"), repo_path),
        sync=_read_sync(reader, top.get("sync")),
        log=_read_log(reader, top.get("log")),
        timeouts=_read_timeouts(reader, top.get("timeouts")),
        schedule=_read_schedule(reader, top.get("schedule")),
        votes=_read_votes(reader, top.get("votes")),
        serve=_read_serve(reader, top.get("serve")),
        advisories=_read_advisories(reader, top.get("advisories")),
        views=_read_views(reader, top.get("views")),
    )
    _check_files(reader, config)
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
