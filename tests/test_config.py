"""Configuration loading: every key's default, every rejection with its message, the example file."""

from __future__ import annotations

import copy
import datetime
import dataclasses
import ipaddress
import operator
import re
import socket
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import pypimirror.configreader
from pypimirror import __version__
from pypimirror.config import Config, IPModeRule, Schedule, SyncConfig, Tier, ViewConfig
from pypimirror.configreader import load_config, parse_config
from pypimirror.configvalues import format_duration, parse_duration, parse_size
from pypimirror.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "conf" / "config.example.yaml"
MiB = 1024**2
GiB = 1024**3

MINIMAL: dict[str, Any] = {
    "repo_path": "/srv/pypimirror",
    "upstream": {"pypi_url": "https://example.org", "packages_url": "https://files.example.org/packages"},
    "cache": {"size_limit": "500g"},
}


def make_data(**sections: Any) -> dict[str, Any]:
    """The minimal valid tree, with top-level keys replaced and sections merged one level deep."""
    data = copy.deepcopy(MINIMAL)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def problems_of(data: object, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="test.yaml", base_dir=base_dir or Path("/etc/pypimirror"))
    assert str(caught.value).startswith("test.yaml: ")
    return [str(problem) for problem in caught.value.problems]


def parse(data: object) -> Config:
    return parse_config(data, base_dir=Path("/etc/pypimirror"))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512g", 512 * GiB),
        ("512G", 512 * GiB),
        ("1T", 1024**4),
        ("2tb", 2 * 1024**4),
        ("1.5g", 1610612736),
        ("100", 100),
        ("100b", 100),
        ("100B", 100),
        (" 4 g ", 4 * GiB),
        ("1kb", 1024),
        ("1 MB", 1024**2),
        ("1k", 1024),
        ("0", 0),
        (".5k", 512),
        ("1.0001k", 1024),  # a fraction of a byte is dropped
        (1048576, 1048576),
        (0, 0),
        (2.0, 2),
    ],
)
def test_parse_size_reads_binary_multiples(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12 XB", "'12 XB' is not a size (expected e.g. 500g, 1.5 TB, 1048576)"),
        ("-1g", "'-1g' is not a size"),
        ("", "'' is not a size"),
        ("   ", "'   ' is not a size"),
        ("g", "'g' is not a size"),
        ("inf", "'inf' is not a size"),
        ("nan", "'nan' is not a size"),
        ("1e3", "'1e3' is not a size"),
        ("1,5g", "'1,5g' is not a size"),
        ("1gib", "'1gib' is not a size"),
        ("١٢", "'١٢' is not a size"),
        (-1, "-1 is not a size: it must be 0 or more"),
        (float("inf"), "inf is not a size: it must be 0 or more"),
        (float("nan"), "nan is not a size: it must be 0 or more"),
        (True, "True is not a size"),
        ([1], "a list is not a size"),
        ("9000000t", "'9000000t' is too large a size"),
    ],
)
def test_parse_size_rejects_with_message(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_size(value)


def test_bad_size_names_its_key_path() -> None:
    tiers = [{"path": "/ssd", "size_limit": "1t"}, {"path": "/hdd", "size_limit": "12 XB"}]
    assert problems_of(make_data(cache={"size_limit": None, "tiers": tiers})) == [
        "cache.tiers[1].size_limit: '12 XB' is not a size (expected e.g. 500g, 1.5 TB, 1048576)"
    ]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("1d12h", timedelta(hours=36)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90s", timedelta(seconds=90)),
        ("0s", timedelta(0)),
        (" 1h 30m ", timedelta(minutes=90)),
    ],
)
def test_parse_duration_reads_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("60", "'60' has no unit (expected e.g. 30s, 5m, 2h, 1h30m, 7d)"),
        (60, "60 has no unit"),
        (1.5, "1.5 has no unit"),
        ("5w", "'5w' is not a duration (expected e.g. 30s, 5m, 2h, 1h30m, 7d)"),
        ("1.5h", "'1.5h' is not a duration"),
        ("-5m", "'-5m' is not a duration"),
        ("", "'' is not a duration"),
        ("1H", "'1H' is not a duration"),
        ("30m1h", "'30m1h' is not a duration"),
        ("5ms", "'5ms' is not a duration"),
        ("h", "'h' is not a duration"),
        (True, "True is not a duration"),
        ({"h": 1}, "a mapping is not a duration"),
    ],
)
def test_parse_duration_rejects_with_message(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_duration(value)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=7), "7d"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(seconds=120), "2m"),
    ],
)
def test_format_duration_gives_text_that_parses_back(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


def test_bad_duration_names_its_key_path() -> None:
    assert problems_of(make_data(timeouts={"read": 30})) == [
        "timeouts.read: 30 has no unit (expected e.g. 30s, 5m, 2h, 1h30m, 7d)"
    ]


@pytest.mark.parametrize("key_path", ["timeouts.read", "timeouts.upstream", "cache.vote_window"])
def test_zero_duration_is_refused_where_it_makes_no_sense(key_path: str) -> None:
    section, key = key_path.split(".")
    assert problems_of(make_data(**{section: {key: "0s"}})) == [f"{key_path}: '0s' must be longer than 0s"]


# --------------------------------------------------------------------------- defaults

DEFAULTS = [
    ("listen", ":8080"),
    ("prefix", "/pypi"),
    ("shutdown_grace", timedelta(seconds=30)),
    ("database.url", "sqlite:////srv/pypimirror/pypi-mirror.db"),
    ("upstream.redirect_url", "https://files.example.org/packages"),
    ("upstream.proxy", None),
    ("upstream.listing", "simple-json"),
    ("tls.cert", None),
    ("tls.key", None),
    ("trusted_proxies", ()),
    ("ip_modes.default", "302"),
    ("ip_modes.rules", ()),
    ("cache.size_limit", 500 * GiB),
    ("cache.tiers", (Tier(path=Path("/srv/pypimirror/packages"), size_limit=500 * GiB),)),
    ("cache.filesize_limit", None),
    ("cache.min_vote_count", 2),
    ("cache.vote_window", timedelta(days=7)),
    ("cache.dedup_window", timedelta(minutes=5)),
    ("cache.size_db_ttl", timedelta(days=2)),
    ("cache.verify_bytes_per_run", 4 * GiB),
    ("sync.retry", 3),
    ("sync.download_error_threshold", 5),
    ("sync.user_agent", f"pypimirror/{__version__}"),
    ("sync.concurrent_downloads", 4),
    ("sync.max_deletions", 1000),
    ("sync.max_error_share", 0.5),
    ("log.path", None),
    ("log.format", "mirror-json"),
    ("timeouts.read", timedelta(seconds=30)),
    ("timeouts.write", timedelta(seconds=120)),
    ("timeouts.idle", timedelta(seconds=60)),
    ("timeouts.upstream", timedelta(seconds=60)),
    ("schedule.index_sync", Schedule(interval=timedelta(hours=1))),
    ("schedule.cache", Schedule(interval=timedelta(hours=1))),
    ("schedule.jitter", timedelta(minutes=2)),
    ("schedule.run_on_start", True),
    ("votes.queue_size", 1000),
    ("votes.bots", ("bandersnatch", "Googlebot", "bingbot", "YandexBot", "Baiduspider")),
    ("serve.workers", 1),
    ("serve.max_connections", None),
    ("serve.buffer_budget", 256 * MiB),
]


@pytest.mark.parametrize(("attribute", "expected"), DEFAULTS)
def test_unset_key_takes_its_default(attribute: str, expected: object) -> None:
    assert operator.attrgetter(attribute)(parse(MINIMAL)) == expected


def test_node_id_defaults_to_the_host_name() -> None:
    assert parse(MINIMAL).node_id == socket.gethostname()


def test_null_value_counts_as_absent() -> None:
    config = parse(make_data(listen=None, sync={"retry": None}, log=None, cache={"filesize_limit": None}))
    assert (config.listen, config.sync.retry, config.log.path, config.cache.filesize_limit) == (
        ":8080",
        3,
        None,
        None,
    )


def test_given_values_replace_defaults() -> None:
    config = parse(
        make_data(
            listen="127.0.0.1:9000",
            prefix="/mirror/pypi",
            node_id="node-a",
            cache={"filesize_limit": "1g", "min_vote_count": 5, "dedup_window": "0s"},
            sync={"concurrent_downloads": 256, "max_deletions": 0, "user_agent": "mirror-bot/2"},
            votes={"bots": ["curl"], "queue_size": 1},
            serve={"workers": 64, "max_connections": 500, "buffer_budget": "64m"},
            log={"path": "/var/log/pypimirror/access.log", "format": "combined"},
        )
    )
    assert config.listen_address == ("127.0.0.1", 9000)
    assert config.prefix == "/mirror/pypi"
    assert config.node_id == "node-a"
    assert (config.cache.filesize_limit, config.cache.min_vote_count) == (GiB, 5)
    assert config.cache.dedup_window == timedelta(0)
    assert (config.sync.concurrent_downloads, config.sync.max_deletions) == (256, 0)
    assert config.sync.user_agent == "mirror-bot/2"
    assert config.votes == type(config.votes)(queue_size=1, bots=("curl",))
    assert (config.serve.workers, config.serve.max_connections, config.serve.buffer_budget) == (64, 500, 64 * MiB)
    assert config.log.path == Path("/var/log/pypimirror/access.log")
    assert config.log.format == "combined"


# --------------------------------------------------------------------------- unknown keys, types, problems


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (make_data(lisen=":80"), "lisen: unknown key (did you mean 'listen'?)"),
        (make_data(cache={"size_limt": "1g"}), "cache.size_limt: unknown key (did you mean 'size_limit'?)"),
        (make_data(upstream={"pypi-url": "x"}), "upstream.pypi-url: unknown key (did you mean 'pypi_url'?)"),
        (
            make_data(
                cache={"size_limit": None, "tiers": [{"path": "/a", "size_limit": 1, "sise_limit": 2}]}
            ),
            "cache.tiers[0].sise_limit: unknown key (did you mean 'size_limit'?)",
        ),
        (
            make_data(ip_modes={"rules": [{"cidr": "10.0.0.0/8", "mode": "proxy", "mdoe": 302}]}),
            "ip_modes.rules[0].mdoe: unknown key (did you mean 'mode'?)",
        ),
        (make_data(serve={"zzz": 1}), "serve.zzz: unknown key (expected one of: workers, max_connections, buffer_budget)"),
        (make_data(database={"dsn": "x"}), "database.dsn: unknown key (expected one of: url)"),
        (make_data(**{"7": 1}), "7: unknown key (expected one of: listen, repo_path, prefix, "),
    ],
)
def test_unknown_key_is_refused_naming_path_and_nearest_key(data: object, problem: str) -> None:
    problems = problems_of(data)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def _sections() -> list[tuple[object, str, type[Any]]]:
    """A tree with an unknown key ``zzz`` in each section of the model, its key path and its dataclass."""
    hints = typing.get_type_hints(Config)
    nested = [name for name, hint in hints.items() if dataclasses.is_dataclass(hint)]
    assert {"database", "upstream", "cache", "serve"} <= set(nested)  # the walk does find the sections
    return [
        (make_data(zzz=1), "zzz", Config),
        *[(make_data(**{name: {"zzz": 1}}), f"{name}.zzz", hints[name]) for name in nested],
        (make_data(ip_modes={"rules": [{"cidr": "10.0.0.0/8", "mode": "proxy", "zzz": 1}]}), "ip_modes.rules[0].zzz",
         IPModeRule),
        (make_data(cache={"size_limit": None, "tiers": [{"path": "/t", "size_limit": 1, "zzz": 1}]}),
         "cache.tiers[0].zzz", Tier),
    ]  # fmt: skip


@pytest.mark.parametrize(("data", "path", "model"), _sections())
def test_each_section_accepts_exactly_its_dataclass_fields(data: object, path: str, model: type[Any]) -> None:
    keys = [field.metadata.get("key", field.name) for field in dataclasses.fields(model)]
    assert problems_of(data) == [f"{path}: unknown key (expected one of: {', '.join(keys)})"]


def test_a_rule_is_written_with_cidr_for_its_network_field() -> None:
    rules = parse(make_data(ip_modes={"rules": [{"cidr": "10.0.0.0/8", "mode": "proxy"}]})).ip_modes.rules
    assert rules == (IPModeRule(network=ipaddress.ip_network("10.0.0.0/8"), mode="proxy"),)
    assert problems_of(make_data(ip_modes={"rules": [{"network": "10.0.0.0/8", "mode": "proxy"}]})) == [
        "ip_modes.rules[0].network: unknown key (expected one of: cidr, mode)",
        "ip_modes.rules[0].cidr: required key is missing",
    ]


def test_a_model_field_without_a_parser_fails_every_parse_instead_of_being_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class GrownSyncConfig(SyncConfig):
        new_key: int = 1

    monkeypatch.setattr(pypimirror.configreader, "SyncConfig", GrownSyncConfig)
    with pytest.raises(TypeError, match=r"^GrownSyncConfig: keys without a parser \['new_key'\]"):
        parse(MINIMAL)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (make_data(cache=["500g"]), "cache: expected a mapping, got a list"),
        (
            make_data(upstream="https://example.org"),
            "upstream: expected a mapping, got 'https://example.org'",
        ),
        (make_data(trusted_proxies="10.0.0.0/8"), "trusted_proxies: expected a list, got '10.0.0.0/8'"),
        (
            make_data(cache={"size_limit": None, "tiers": {"path": "/a"}}),
            "cache.tiers: expected a list, got a mapping",
        ),
        (make_data(listen=8080), "listen: expected a string, got 8080"),
        (make_data(repo_path=["/srv"]), "repo_path: expected a string, got a list"),
        (make_data(sync={"retry": "3"}), "sync.retry: expected a whole number, got '3'"),
        (make_data(sync={"retry": True}), "sync.retry: expected a whole number, got True"),
        (make_data(sync={"retry": 2.0}), "sync.retry: expected a whole number, got 2.0"),
        (
            make_data(schedule={"run_on_start": "yes"}),
            "schedule.run_on_start: expected true or false, got 'yes'",
        ),
        (make_data(votes={"bots": ["curl", 7]}), "votes.bots[1]: expected a string, got 7"),
        (make_data(sync={"user_agent": " "}), "sync.user_agent: must not be empty"),
    ],
)
def test_wrong_type_is_refused_with_key_path(data: object, problem: str) -> None:
    assert problems_of(data) == [problem]


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of(["repo_path"]) == ["expected a mapping at the top level, got a list"]


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        ("sync.retry", 0, "0 is out of range (must be from 1 to 100)"),
        ("sync.retry", 101, "101 is out of range (must be from 1 to 100)"),
        ("sync.download_error_threshold", -1, "-1 is out of range (must be from 1 to 1000000)"),
        ("sync.download_error_threshold", 10**6 + 1, "1000001 is out of range (must be from 1 to 1000000)"),
        ("sync.concurrent_downloads", 0, "0 is out of range (must be from 1 to 256)"),
        ("sync.concurrent_downloads", 257, "257 is out of range (must be from 1 to 256)"),
        ("sync.max_deletions", -1, "-1 is out of range (must be at least 0)"),
        ("sync.max_deletions", 10**9 + 1, "1000000001 is out of range (must be at most 1000000000)"),
        ("cache.min_vote_count", 0, "0 is out of range (must be from 1 to 1000000)"),
        ("cache.min_vote_count", 10**30, f"{10**30} is out of range (must be from 1 to 1000000)"),
        ("votes.queue_size", 0, "0 is out of range (must be from 1 to 1000000)"),
        ("votes.queue_size", 10**12, f"{10**12} is out of range (must be from 1 to 1000000)"),
        ("serve.workers", 65, "65 is out of range (must be from 1 to 64)"),
        ("serve.max_connections", 0, "0 is out of range (must be from 1 to 1000000)"),
        ("serve.max_connections", 10**30, f"{10**30} is out of range (must be from 1 to 1000000)"),
    ],
)
def test_integer_out_of_bounds_is_refused(key_path: str, value: int, message: str) -> None:
    section, key = key_path.split(".")
    assert problems_of(make_data(**{section: {key: value}})) == [f"{key_path}: {message}"]


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        ("shutdown_grace", "99999999999d", "'99999999999d' is too long (at most 3650d)"),  # was an OverflowError
        ("shutdown_grace", "2h", "'2h' is too long (at most 1h)"),
        ("cache.vote_window", "367d", "'367d' is too long (at most 366d)"),
        ("cache.dedup_window", "400d", "'400d' is too long (at most 366d)"),
        ("cache.size_db_ttl", "400d", "'400d' is too long (at most 366d)"),
        ("timeouts.read", "2d", "'2d' is too long (at most 1d)"),
        ("timeouts.upstream", "3651d", "'3651d' is too long (at most 3650d)"),
        ("schedule.jitter", "1d1s", "'1d1s' is too long (at most 1d)"),
        ("schedule.index_sync", "367d", "'367d' is too long (at most 366d)"),
        ("schedule.cache", "9999999999999d", "'9999999999999d' is too long (at most 3650d)"),
    ],
)
def test_durations_longer_than_their_bound_are_refused(key_path: str, value: str, message: str) -> None:
    section, _, key = key_path.rpartition(".")
    data = make_data(**{section: {key: value}}) if section else make_data(**{key: value})
    assert problems_of(data) == [f"{key_path}: {message}"]


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"sync": {"user_agent": "pypimirror\nX-Evil: 1"}}, "sync.user_agent: contains a control character (U+000A)"),
        ({"sync": {"user_agent": "pypimirror/\u00e9"}},
         "sync.user_agent: 'pypimirror/\u00e9' is sent as an HTTP header: use printable ASCII characters only"),
        ({"sync": {"user_agent": "a" * 1025}}, "sync.user_agent: is 1025 characters long (at most 1024 for an HTTP header)"),
        ({"node_id": "node\t1"}, "node_id: contains a control character (U+0009)"),
        ({"node_id": "n" * 256}, "node_id: is 256 characters long (at most 255)"),
        ({"votes": {"bots": ["b\rot"]}}, "votes.bots[0]: contains a control character (U+000D)"),
        ({"repo_path": "/srv/\x00mirror"}, "repo_path: contains a control character (U+0000)"),
        ({"log": {"path": "/var/log/a\x85b"}}, "log.path: contains a control character (U+0085)"),
        ({"database": {"url": "postgresql://u:secret\n@db.example.org/pypi"}},
         "database.url: contains a control character (U+000A)"),
        ({"upstream": {"redirect_url": "https://example.org/\r\nSet-Cookie: a=b"}},
         "upstream.redirect_url: contains a control character (U+000D)"),
        ({"upstream": {"redirect_url": "https://example.org/a b"}},
         "upstream.redirect_url: 'https://example.org/a b' must be ASCII without spaces (percent-encode other "
         "characters, write an international host name in its xn-- form)"),
        ({"upstream": {"proxy": "http://u:p\u00e4ss@127.0.0.1:3128"}},
         "upstream.proxy: 'http://u:***@127.0.0.1:3128' must be ASCII without spaces (percent-encode other "
         "characters, write an international host name in its xn-- form)"),
        ({"prefix": "/" + "p" * 4096}, "prefix: is 4097 characters long (at most 4096)"),
        ({"trusted_proxies": ["10.0.0.0/8"] * 1001}, "trusted_proxies: has 1001 entries (at most 1000)"),
    ],
)
def test_text_that_would_break_a_header_a_url_or_a_log_line_is_refused(
    sections: dict[str, Any], problem: str
) -> None:
    assert problems_of(make_data(**sections)) == [problem]


R = "/srv/pypimirror"  # MINIMAL's repo_path


@pytest.mark.parametrize(
    ("sections", "problems"),
    [
        ({"cache": {"size_limit": None, "tiers": [{"path": f"{R}/simple/cache", "size_limit": "1g"}]}},
         [f"cache.tiers[0].path: '{R}/simple/cache' is inside repo_path's simple/, whose entries the index sync "
          "deletes when it does not list them; use a directory of its own"]),
        ({"cache": {"size_limit": None, "tiers": [{"path": f"{R}/json", "size_limit": "1g"}]}},
         [f"cache.tiers[0].path: '{R}/json' is inside repo_path's json/, whose entries the index sync "
          "deletes when it does not list them; use a directory of its own"]),
        ({"cache": {"size_limit": None, "tiers": [{"path": "/data", "size_limit": 1}, {"path": "/data", "size_limit": 1}]}},
         ["cache.tiers[1].path: '/data' overlaps cache.tiers[0] ('/data')"]),
        ({"cache": {"size_limit": None, "tiers": [{"path": "/data/a/b", "size_limit": 1}, {"path": "/data", "size_limit": 1}]}},
         ["cache.tiers[1].path: '/data' overlaps cache.tiers[0] ('/data/a/b')"]),
        ({"log": {"path": f"{R}/packages/access.log"}},
         [f"log.path: '{R}/packages/access.log' is inside the cache tier '{R}/packages', "
          "where jobs delete and replace files"]),
        ({"log": {"path": f"{R}/simple/access.log"}},
         [f"log.path: '{R}/simple/access.log' is inside repo_path's simple/, where jobs delete and replace files"]),
        ({"log": {"path": f"{R}/pypi-mirror.db"}}, [f"log.path: '{R}/pypi-mirror.db' is also database.url"]),
        ({"database": {"url": "sqlite:////ssd/cache/pypi.db"},
          "cache": {"size_limit": None, "tiers": [{"path": "/ssd/cache", "size_limit": "1g"}]}},
         ["database.url: '/ssd/cache/pypi.db' is inside the cache tier '/ssd/cache', where jobs delete and replace "
          "files"]),
        ({"tls": {"cert": f"{R}/json/cert.pem", "key": "/etc/tls/key.pem"}},
         [f"tls.cert: '{R}/json/cert.pem' is inside repo_path's json/, where jobs delete and replace files"]),
        ({"tls": {"cert": "/etc/tls/both.pem", "key": "/etc/tls/both.pem"}, "log": {"path": "/etc/tls/both.pem"}},
         ["tls.cert: '/etc/tls/both.pem' is also log.path", "tls.key: '/etc/tls/both.pem' is also log.path"]),
    ],
)
def test_overlapping_paths_are_refused_with_the_key_path(sections: dict[str, Any], problems: list[str]) -> None:
    assert problems_of(make_data(**sections)) == problems


def test_paths_side_by_side_in_the_repo_are_accepted() -> None:
    tiers = [{"path": f"{R}/ssd", "size_limit": "1g"}, {"path": f"{R}/simple-cache", "size_limit": "1g"}]
    config = parse(make_data(cache={"size_limit": None, "tiers": tiers}, log={"path": f"{R}/access.log"},
                             tls={"cert": "/etc/tls/both.pem", "key": "/etc/tls/both.pem"}))
    assert [tier.path for tier in config.cache.tiers] == [Path(f"{R}/ssd"), Path(f"{R}/simple-cache")]


def test_paths_are_compared_with_symlinks_followed(tmp_path: Path) -> None:
    (tmp_path / "repo" / "simple").mkdir(parents=True)
    (tmp_path / "cache-link").symlink_to(tmp_path / "repo" / "simple")
    (tmp_path / "ssd").mkdir()
    (tmp_path / "log-link").symlink_to(tmp_path / "ssd")
    data = make_data(repo_path=str(tmp_path / "repo"), log={"path": "log-link/access.log"},
                     cache={"size_limit": None, "tiers": [{"path": "cache-link/x", "size_limit": 1},
                                                          {"path": "ssd", "size_limit": 1}]})
    assert problems_of(data, base_dir=tmp_path) == [
        f"cache.tiers[0].path: '{tmp_path}/cache-link/x' (which is '{tmp_path}/repo/simple/x') is inside "
        "repo_path's simple/, whose entries the index sync deletes when it does not list them; "
        "use a directory of its own",
        f"log.path: '{tmp_path}/log-link/access.log' (which is '{tmp_path}/ssd/access.log') is inside the cache "
        f"tier '{tmp_path}/ssd', where jobs delete and replace files",
    ]


def test_the_audit_s_bad_values_are_all_reported_at_once() -> None:
    data = make_data(
        shutdown_grace="99999999999d",
        cache={"size_limit": None, "min_vote_count": 10**30, "tiers": [{"path": f"{R}/simple/x", "size_limit": 1}]},
        sync={"user_agent": "pypimirror\r\nX: y"},
    )
    assert [problem.split(":")[0] for problem in problems_of(data)] == [
        "shutdown_grace", "cache.min_vote_count", "cache.tiers[0].path", "sync.user_agent",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("512k", "'512k' is out of range (must be from 1m to 1t)"),
        ("2t", "'2t' is out of range (must be from 1m to 1t)"),
        ("lots", "'lots' is not a size (expected e.g. 500g, 1.5 TB, 1048576)"),
    ],
)
def test_a_buffer_budget_out_of_bounds_is_refused(value: str, message: str) -> None:
    assert problems_of(make_data(serve={"buffer_budget": value})) == [f"serve.buffer_budget: {message}"]


@pytest.mark.parametrize(("raw", "share"), [(0, 0.0), (0.25, 0.25), ("90%", 0.9), (" 0% ", 0.0)])
def test_max_error_share_takes_a_fraction_or_a_percentage(raw: object, share: float) -> None:
    assert parse_config(make_data(sync={"max_error_share": raw}), base_dir=Path("/")).sync.max_error_share == share


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (1, "1 is out of range (must be at least 0 and below 1)"),
        (-0.1, "-0.1 is out of range (must be at least 0 and below 1)"),
        ("100%", "'100%' is out of range (must be at least 0 and below 1)"),
        (float("nan"), "nan is out of range (must be at least 0 and below 1)"),
        ("half", "'half' is not a share (expected e.g. 0.5 or 50%)"),
        ("x%", "'x%' is not a share (expected e.g. 0.5 or 50%)"),
        (True, "True is not a share (expected e.g. 0.5 or 50%)"),
    ],
)
def test_max_error_share_out_of_range_or_not_a_share_is_refused(raw: object, message: str) -> None:
    assert problems_of(make_data(sync={"max_error_share": raw})) == [f"sync.max_error_share: {message}"]


def test_every_problem_is_reported_at_once() -> None:
    data = make_data(
        lisen=":80",
        cache={"size_limt": "1g", "size_limit": "12 XB"},
        sync={"retry": 0},
        timeouts={"write": "2 minutes"},
        ip_modes={"default": "redirect"},
    )
    assert problems_of(data) == [
        "lisen: unknown key (did you mean 'listen'?)",
        "ip_modes.default: 'redirect' is not a mode (expected 302 or proxy)",
        "cache.size_limt: unknown key (did you mean 'size_limit'?)",
        "cache.size_limit: '12 XB' is not a size (expected e.g. 500g, 1.5 TB, 1048576)",
        "sync.retry: 0 is out of range (must be from 1 to 100)",
        "timeouts.write: '2 minutes' is not a duration (expected e.g. 30s, 5m, 2h, 1h30m, 7d)",
    ]


def test_config_error_lists_every_problem_in_its_message() -> None:
    with pytest.raises(ConfigError, match=r"^x.yaml: lisen: unknown key .*; sync.retry: 0 is out of range"):
        parse_config(make_data(lisen=1, sync={"retry": 0}), source="x.yaml")


# --------------------------------------------------------------------------- required keys and the budget


def test_empty_config_names_every_required_key() -> None:
    assert problems_of({}) == [
        "repo_path: required key is missing",
        "upstream.pypi_url: required key is missing",
        "upstream.packages_url: required key is missing",
        "cache.size_limit: required: the byte budget (or cache.tiers, each with path and size_limit)",
    ]


def test_malformed_section_does_not_also_report_its_keys_missing() -> None:
    assert problems_of(make_data(upstream=["https://example.org"], cache="500g")) == [
        "upstream: expected a mapping, got a list",
        "cache: expected a mapping, got '500g'",
    ]


def test_tiers_replace_size_limit_as_the_budget() -> None:
    tiers = [{"path": "/ssd/pypi", "size_limit": "2t"}, {"path": "hdd", "size_limit": 1000}]
    config = parse(make_data(cache={"size_limit": None, "tiers": tiers}))
    assert config.cache.tiers == (
        Tier(path=Path("/ssd/pypi"), size_limit=2 * 1024**4),
        Tier(path=Path("/etc/pypimirror/hdd"), size_limit=1000),
    )
    assert config.cache.size_limit is None


def test_empty_tiers_list_means_the_single_implicit_tier() -> None:
    config = parse(make_data(cache={"tiers": [], "size_limit": "1g"}))
    assert config.cache.tiers == (Tier(path=Path("/srv/pypimirror/packages"), size_limit=GiB),)
    assert config.cache.tier_roots == (Path("/srv/pypimirror/packages"),)
    assert config.cache.tier_limits == (GiB,)


def test_tier_roots_and_limits_follow_the_tiers_hottest_first() -> None:
    tiers = [{"path": "/ssd", "size_limit": "2g"}, {"path": "/hdd", "size_limit": "1g"}]
    cache = parse(make_data(cache={"size_limit": None, "tiers": tiers})).cache
    assert cache.tier_roots == (Path("/ssd"), Path("/hdd"))
    assert cache.tier_limits == (2 * GiB, GiB)


@pytest.mark.parametrize(
    ("tiers", "problems"),
    [
        ([{"path": "/ssd"}], ["cache.tiers[0].size_limit: required key is missing"]),
        ([{"size_limit": "1t"}], ["cache.tiers[0].path: required key is missing"]),
        (
            [None],
            [
                "cache.tiers[0].path: required key is missing",
                "cache.tiers[0].size_limit: required key is missing",
            ],
        ),
        (["/ssd"], ["cache.tiers[0]: expected a mapping, got '/ssd'"]),
        (
            [{"path": "/data", "size_limit": 1}, {"path": "/data/hdd", "size_limit": 1}],
            ["cache.tiers[1].path: '/data/hdd' overlaps cache.tiers[0] ('/data')"],
        ),
        (
            [{"path": "/a", "size_limit": 1}, {"path": "/a/", "size_limit": 1}],
            ["cache.tiers[1].path: '/a' overlaps cache.tiers[0] ('/a')"],
        ),
        (
            [{"path": "/srv", "size_limit": 1}],
            ["cache.tiers[0].path: '/srv' holds repo_path; use a directory of its own",
             "database.url: '/srv/pypimirror/pypi-mirror.db' is inside the cache tier '/srv', "
             "where jobs delete and replace files"],
        ),
    ],
)
def test_bad_tiers_are_refused(tiers: list[object], problems: list[str]) -> None:
    assert problems_of(make_data(cache={"size_limit": None, "tiers": tiers})) == problems


def test_size_limit_together_with_tiers_is_refused() -> None:
    tiers = [{"path": "/ssd", "size_limit": "1t"}]
    assert problems_of(make_data(cache={"size_limit": "1g", "tiers": tiers})) == [
        "cache.size_limit: not allowed with cache.tiers: give each tier its size_limit"
    ]


def test_explicit_zero_budget_is_allowed() -> None:
    assert parse(make_data(cache={"size_limit": 0})).cache.tiers[0].size_limit == 0


# --------------------------------------------------------------------------- values with a grammar


@pytest.mark.parametrize(
    ("value", "expected"),
    [(":8080", ("", 8080)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:8080", ("::1", 8080))],
)
def test_listen_address_is_split_for_binding(value: str, expected: tuple[str, int]) -> None:
    assert parse(make_data(listen=value)).listen_address == expected


@pytest.mark.parametrize("value", ["8080", ":99999", "host name:80", ":", "localhost"])
def test_bad_listen_address_is_refused(value: str) -> None:
    assert problems_of(make_data(listen=value)) == [
        f"listen: {value!r} is not a listen address (expected e.g. ':8080', '127.0.0.1:8080', '[::1]:8080')"
    ]


@pytest.mark.parametrize("value", ["/", "pypi", "/pypi/", "//pypi", "/py pi", "/a?b"])
def test_bad_prefix_is_refused(value: str) -> None:
    assert problems_of(make_data(prefix=value)) == [
        f"prefix: {value!r} is not a URL prefix (it starts with '/' and does not end with '/', e.g. /pypi)"
    ]


def test_upstream_urls_lose_trailing_slashes_and_redirect_url_can_differ() -> None:
    upstream = {
        "pypi_url": "https://example.org/",
        "packages_url": "https://files.example.org/packages//",
        "redirect_url": "http://cdn.example.org/packages/",
    }
    config = parse(make_data(upstream=upstream))
    assert config.upstream.pypi_url == "https://example.org"
    assert config.upstream.packages_url == "https://files.example.org/packages"
    assert config.upstream.redirect_url == "http://cdn.example.org/packages"


def test_a_package_file_url_is_its_path_percent_encoded_under_packages_url() -> None:
    config = parse(make_data(upstream={"packages_url": "https://files.example.org/packages//"}))
    assert config.upstream.file_url("ab/cd/h/x+1.0.tar.gz") == "https://files.example.org/packages/ab/cd/h/x%2B1.0.tar.gz"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "ftp://example.org",
            "'ftp://example.org' is not an http(s) URL with a host (e.g. https://example.org)",
        ),
        ("example.org", "'example.org' is not an http(s) URL with a host"),
        ("https://", "'https:' is not an http(s) URL with a host"),
        ("https://example.org/?x=1", "'https://example.org/?x=1' must not have a query or a fragment"),
        ("https://example.org:http", "'https://example.org:http' is not a valid URL"),
        ("https://u:secret@[::1", "'https://u:***@[::1' is not a valid URL"),
    ],
)
def test_bad_upstream_url_is_refused(value: str, message: str) -> None:
    problems = problems_of(make_data(upstream={"pypi_url": value}))
    assert len(problems) == 1
    assert problems[0].startswith(f"upstream.pypi_url: {message}")


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:3128",
        "https://proxy.example.org:443",
        "socks5://127.0.0.1:1080",
        "socks5h://user:pass@127.0.0.1:1080/",
        "http://[::1]:3128",
    ],
)
def test_proxy_with_supported_scheme_is_kept(value: str) -> None:
    assert parse(make_data(upstream={"proxy": value})).upstream.proxy == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "ftp://127.0.0.1:21",
            "'ftp://127.0.0.1:21' has an unsupported scheme (expected one of http, https, socks5, socks5h)",
        ),
        ("socks4://127.0.0.1:1080", "'socks4://127.0.0.1:1080' has an unsupported scheme"),
        ("127.0.0.1:3128", "'127.0.0.1:3128' has an unsupported scheme"),
        ("http://127.0.0.1", "'http://127.0.0.1' needs a host and a port, e.g. http://127.0.0.1:3128"),
        ("http://:3128", "'http://:3128' needs a host and a port"),
        ("http://u:secret@127.0.0.1", "'http://u:***@127.0.0.1' needs a host and a port"),
        (
            "http://127.0.0.1:3128/path",
            "'http://127.0.0.1:3128/path' must be scheme://[user:password@]host:port only",
        ),
        ("http://127.0.0.1:99999", "'http://127.0.0.1:99999' is not a valid URL"),
    ],
)
def test_bad_proxy_is_refused_without_showing_its_password(value: str, message: str) -> None:
    problems = problems_of(make_data(upstream={"proxy": value}))
    assert len(problems) == 1
    assert problems[0].startswith(f"upstream.proxy: {message}")
    assert "secret" not in problems[0]


@pytest.mark.parametrize("value", ["simple-json", "xmlrpc"])
def test_listing_accepts_both_methods(value: str) -> None:
    assert parse(make_data(upstream={"listing": value})).upstream.listing == value


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            make_data(upstream={"listing": "json"}),
            "upstream.listing: 'json' is not one of simple-json, xmlrpc",
        ),
        (make_data(log={"format": "json"}), "log.format: 'json' is not one of mirror-json, combined"),
        (make_data(log={"format": "Combined"}), "log.format: 'Combined' is not one of mirror-json, combined"),
    ],
)
def test_bad_choice_is_refused(data: object, problem: str) -> None:
    assert problems_of(data) == [problem]


def test_database_url_is_kept_as_given() -> None:
    url = "postgresql+psycopg://mirror:secret@127.0.0.1:5432/pypi"
    assert parse(make_data(database={"url": url})).database.url == url


def test_relative_sqlite_database_is_taken_from_the_config_directory() -> None:
    config = parse(make_data(database={"url": "sqlite:///state/mirror.db"}))
    assert config.database.url == "sqlite:////etc/pypimirror/state/mirror.db"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not a url", "not a usable SQLAlchemy URL (Could not parse"),
        ("postgres://127.0.0.1/pypi", "not a usable SQLAlchemy URL (Can't load plugin"),
        ("postgresql+nodriver://127.0.0.1/pypi", "not a usable SQLAlchemy URL (Can't load plugin"),
        ("postgresql://u:secret@127.0.0.1:port/pypi", "not a usable SQLAlchemy URL (invalid literal"),
        ("sqlite://", "'sqlite://' is an in-memory database: everything would be lost on restart"),
        ("sqlite:///:memory:", "'sqlite:///:memory:' is an in-memory database"),
    ],
)
def test_unusable_database_url_is_refused(value: str, message: str) -> None:
    problems = problems_of(make_data(database={"url": value}))
    assert len(problems) == 1
    assert problems[0].startswith(f"database.url: {message}")
    assert "secret" not in problems[0]


# --------------------------------------------------------------------------- networks and modes


def test_trusted_proxies_accept_ipv4_and_ipv6_networks() -> None:
    config = parse(
        make_data(trusted_proxies=["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8", "192.0.2.7"])
    )
    assert config.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.1/8", "'10.0.0.1/8' is not a network in CIDR notation: 10.0.0.1/8 has host bits set"),
        ("fd00::1/8", "'fd00::1/8' is not a network in CIDR notation: fd00::1/8 has host bits set"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not a network in CIDR notation"),
        ("example.org", "'example.org' is not a network in CIDR notation"),
        (10, "10 is not a network in CIDR notation (e.g. 10.0.0.0/8, 2001:db8::/32)"),
    ],
)
def test_bad_cidr_is_refused(value: object, message: str) -> None:
    problems = problems_of(make_data(trusted_proxies=["127.0.0.1/32", value]))
    assert len(problems) == 1
    assert problems[0].startswith(f"trusted_proxies[1]: {message}")


def test_ip_mode_rules_accept_302_as_number_or_text() -> None:
    rules = [
        {"cidr": "10.0.0.0/8", "mode": "proxy"},
        {"cidr": "2001:db8::/32", "mode": 302},
        {"cidr": "192.0.2.0/24", "mode": "302"},
    ]
    config = parse(make_data(ip_modes={"default": "proxy", "rules": rules}))
    assert config.ip_modes.default == "proxy"
    assert config.ip_modes.rules == (
        IPModeRule(network=ipaddress.ip_network("10.0.0.0/8"), mode="proxy"),
        IPModeRule(network=ipaddress.ip_network("2001:db8::/32"), mode="302"),
        IPModeRule(network=ipaddress.ip_network("192.0.2.0/24"), mode="302"),
    )


@pytest.mark.parametrize("mode", [301, "301", "PROXY", "redirect", True, 302.0])
def test_bad_ip_mode_is_refused(mode: object) -> None:
    rules = [{"cidr": "10.0.0.0/8", "mode": mode}]
    assert problems_of(make_data(ip_modes={"rules": rules})) == [
        f"ip_modes.rules[0].mode: {mode!r} is not a mode (expected 302 or proxy)"
    ]


def test_ip_mode_rule_needs_cidr_and_mode() -> None:
    assert problems_of(make_data(ip_modes={"rules": [{"mode": "proxy"}, {"cidr": "10.0.0.0/8"}]})) == [
        "ip_modes.rules[0].cidr: required key is missing",
        "ip_modes.rules[1].mode: required key is missing",
    ]


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30m", Schedule(interval=timedelta(minutes=30))),
        ("1h30m", Schedule(interval=timedelta(minutes=90))),
        ("*/15 * * * *", Schedule(cron="*/15 * * * *")),
        ("0 3 * * mon-fri", Schedule(cron="0 3 * * mon-fri")),
        (" 5 4 * * * ", Schedule(cron="5 4 * * *")),
        ("0 3 * * 7", Schedule(cron="0 3 * * 7")),  # crontab: 7 is Sunday too
        ("0 3 1 * 0-6/2", Schedule(cron="0 3 1 * 0-6/2")),
    ],
)
def test_schedule_is_an_interval_or_a_cron_expression(value: str, expected: Schedule) -> None:
    config = parse(make_data(schedule={"index_sync": value, "cache": value}))
    assert config.schedule.index_sync == expected
    assert config.schedule.cache == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("61 * * * *", "'61 * * * *' is not a valid cron expression: Error validating expression '61'"),
        ("* * * * 8", "'* * * * 8' is not a valid cron expression"),
        ("* * * *", "'* * * *' is neither a duration (e.g. 1h, 30m) nor a 5-field cron expression"),
        ("hourly", "'hourly' is neither a duration"),
        ("3600", "'3600' is neither a duration"),
        (3600, "3600 is neither a duration"),
        ("0s", "'0s' must be longer than 0s"),
    ],
)
def test_bad_schedule_is_refused(value: object, message: str) -> None:
    problems = problems_of(make_data(schedule={"cache": value}))
    assert len(problems) == 1
    assert problems[0].startswith(f"schedule.cache: {message}")


def test_schedule_holds_exactly_one_of_interval_and_cron() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Schedule()
    with pytest.raises(ValueError, match="exactly one"):
        Schedule(interval=timedelta(hours=1), cron="* * * * *")


# --------------------------------------------------------------------------- tls and paths


def test_tls_needs_both_cert_and_key() -> None:
    assert problems_of(make_data(tls={"cert": "/etc/tls/cert.pem"})) == [
        "tls.key: required when tls.cert is set"
    ]
    assert problems_of(make_data(tls={"key": "/etc/tls/key.pem"})) == [
        "tls.cert: required when tls.key is set"
    ]


def test_relative_paths_are_resolved_from_the_config_file_directory(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    data = make_data(
        repo_path="repo",
        tls={"cert": "tls/cert.pem", "key": "./tls/key.pem"},
        log={"path": "../log/access.log"},
        cache={
            "size_limit": None,
            "tiers": [{"path": "/abs/ssd", "size_limit": "1g"}, {"path": "hdd", "size_limit": "2g"}],
        },
    )
    config_file = config_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    config = load_config(config_file)
    assert config.repo_path == config_dir / "repo"
    assert (config.tls.cert, config.tls.key) == (config_dir / "tls/cert.pem", config_dir / "tls/key.pem")
    assert config.log.path == tmp_path / "log/access.log"
    assert [tier.path for tier in config.cache.tiers] == [Path("/abs/ssd"), config_dir / "hdd"]
    assert config.database.url == f"sqlite:///{config_dir}/repo/pypi-mirror.db"


def test_parse_config_resolves_relative_paths_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_config(make_data(repo_path="data/mirror")).repo_path == tmp_path / "data/mirror"


def test_home_directory_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse(make_data(repo_path="~/mirror", log={"path": "~/access.log"}))
    assert (config.repo_path, config.log.path) == (tmp_path / "mirror", tmp_path / "access.log")


def test_log_path_dash_is_stdout_and_other_text_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_config(make_data(log={"path": "-"})).log.path == "-"
    assert parse_config(make_data(log={"path": "./-"})).log.path == tmp_path / "-"
    assert parse_config(make_data(log={"path": "-"})).to_display_dict()["log"]["path"] == "-"


# --------------------------------------------------------------------------- load_config and the file


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read the configuration file: No such file or directory"
    assert caught.value.source == str(missing)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("repo_path: [/srv\n", "not valid YAML (line 2, column 1): "),
        ("a: 1\n b: 2\n", "not valid YAML (line 2, column 3): mapping values are not allowed"),
        ("listen: ':80'\nlisten: ':81'\n", "not valid YAML (line 2, column 1): found duplicate key 'listen'"),
        (
            "cache:\n  size_limit: 1g\n  size_limit: 2g\n",
            "not valid YAML (line 3, column 3): found duplicate key",
        ),
        (
            "!!python/object:os.system {}\n",
            "not valid YAML (line 1, column 1): could not determine a constructor",
        ),
    ],
)
def test_bad_yaml_is_a_config_error_with_its_position(tmp_path: Path, text: str, message: str) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value).startswith(f"{config_file}: {message}")


def test_key_overriding_a_yaml_merge_is_not_a_duplicate(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump({key: value for key, value in MINIMAL.items() if key != "upstream"})
        + "upstream:\n"
        + "  <<: {pypi_url: 'https://old.example.org', packages_url: 'https://files.example.org/p'}\n"
        + "  pypi_url: https://example.org\n"
    )
    assert load_config(config_file).upstream.pypi_url == "https://example.org"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- repo_path\n", "expected a mapping at the top level, got a list"),
        ("just text\n", "expected a mapping at the top level, got 'just text'"),
        ("", "repo_path: required key is missing"),
    ],
)
def test_file_without_a_mapping_is_a_config_error(tmp_path: Path, text: str, problem: str) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value.problems[0]) == problem
    assert caught.value.source == str(config_file)


# --------------------------------------------------------------------------- the effective configuration


def test_display_dict_masks_passwords_and_uses_plain_values() -> None:
    config = parse(
        make_data(
            database={"url": "postgresql+psycopg://mirror:db-secret@127.0.0.1:5432/pypi"},
            upstream={"proxy": "socks5h://me:proxy-secret@127.0.0.1:1080"},
            timeouts={"read": "90m"},
            schedule={"cache": "*/15 * * * *"},
            trusted_proxies=["::1/128"],
            ip_modes={"rules": [{"cidr": "10.0.0.0/8", "mode": "proxy"}]},
        )
    )
    shown = config.to_display_dict()
    dumped = yaml.safe_dump(shown, sort_keys=False)
    assert "secret" not in dumped
    assert shown["database"] == {"url": "postgresql+psycopg://mirror:***@127.0.0.1:5432/pypi"}
    assert shown["upstream"]["proxy"] == "socks5h://me:***@127.0.0.1:1080"
    assert shown["timeouts"] == {"read": "1h30m", "write": "2m", "idle": "1m", "upstream": "1m"}
    assert shown["schedule"]["cache"] == "*/15 * * * *"
    assert shown["schedule"]["index_sync"] == "1h"
    assert shown["cache"]["tiers"] == [{"path": "/srv/pypimirror/packages", "size_limit": 500 * GiB}]
    assert shown["cache"]["size_limit"] == 500 * GiB
    assert shown["trusted_proxies"] == ["::1/128"]
    assert shown["ip_modes"] == {"default": "302", "rules": [{"cidr": "10.0.0.0/8", "mode": "proxy"}]}
    assert shown["repo_path"] == "/srv/pypimirror"
    assert list(shown) == [
        "listen", "repo_path", "prefix", "node_id", "shutdown_grace", "database", "upstream", "tls",
        "trusted_proxies", "ip_modes", "cache", "sync", "log", "timeouts", "schedule", "votes", "serve", "advisories",
        "views",
    ]  # fmt: skip


def _key_paths(tree: object, prefix: str = "") -> set[str]:
    """Every mapping key path in a tree (lists are leaves)."""
    if not isinstance(tree, dict):
        return set()
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        paths |= {path} | _key_paths(value, path)
    return paths


def test_example_config_loads_and_shows_every_key() -> None:
    config = load_config(EXAMPLE)
    example = yaml.safe_load(EXAMPLE.read_text())
    assert _key_paths(example) == _key_paths(config.to_display_dict())


def test_example_config_states_the_real_defaults() -> None:
    assert load_config(EXAMPLE) == parse(MINIMAL)


def test_example_config_names_no_real_public_host() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert example["upstream"]["pypi_url"] == "https://example.org"
    assert example["upstream"]["packages_url"] == "https://files.example.org/packages"


def test_cache_policy_is_default_unless_set_and_refuses_unknown_names() -> None:
    assert parse(make_data()).cache.policy == "default"
    assert parse(make_data(cache={"size_limit": "1g", "policy": "seed"})).cache.policy == "seed"
    [problem] = problems_of(make_data(cache={"size_limit": "1g", "policy": "lru"}))
    assert problem == "cache.policy: 'lru' is not one of seed, default"


def test_named_views_are_read_with_dates_durations_and_normalized_patterns() -> None:
    config = parse(make_data(views={
        "stable": {"min_age": "2w", "exempt": ["Internal_*"], "not_after": datetime.date(2026, 6, 1)},
        "frozen": {"not_after": "2026-06-01T12:30:00+02:00"},
    }))
    assert config.views["stable"] == ViewConfig(
        min_age=datetime.timedelta(days=14), exempt=("internal-*",),
        not_after=datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC),
    )
    assert config.views["frozen"].not_after == datetime.datetime(2026, 6, 1, 10, 30, tzinfo=datetime.UTC)
    assert config.views["frozen"].min_age is None
    shown = config.to_display_dict()["views"]
    assert shown["stable"] == {"min_age": "14d", "exempt": ["internal-*"], "not_after": "2026-06-01T00:00:00Z"}
    assert parse(make_data()).views == {}


@pytest.mark.parametrize(
    ("views", "problem"),
    [
        ([], "views: expected a mapping of view names, got a list"),
        ({"Stable": {"min_age": "7d"}}, "views.Stable: a view name is 1-64 of a-z 0-9 . _ - "
                                        "(starting and ending with a letter or digit)"),
        ({"s": {}}, "views.s: set min_age, not_after or both (a view without either leaves nothing out)"),
        ({"s": {"min_age": "7"}}, "views.s.min_age: '7' is not a duration (expected e.g. 30m, 12h, 7d, 2w)"),
        ({"s": {"min_age": "0d"}}, "views.s.min_age: '0d' is not longer than 0 (expected e.g. 30m, 12h, 7d, 2w)"),
        ({"s": {"min_age": "9999d"}}, "views.s.min_age: '9999d' is too long (at most 3650d)"),
        ({"s": {"not_after": "yesterday"}}, "views.s.not_after: 'yesterday' is not a moment (expected RFC 3339 "
                                            "such as 2026-06-01T12:00:00Z, or a date such as 2026-06-01)"),
        ({"s": {"not_after": "2026-02-30"}}, "views.s.not_after: '2026-02-30' is not a real date and time"),
        ({"s": {"not_after": datetime.datetime(2026, 6, 1)}},
         "views.s.not_after: '2026-06-01T00:00:00' has no time zone (add Z or an offset such as +02:00)"),
        ({"s": {"min_age": "7d", "exempt": [""]}}, "views.s.exempt[0]: must not be empty"),
        ({"s": {"min_age": "7d", "minage": "1d"}}, "views.s.minage: unknown key (did you mean 'min_age'?)"),
    ],
)
def test_bad_named_views_are_refused_with_their_key_path(views: object, problem: str) -> None:
    assert problems_of(make_data(views=views)) == [problem]
