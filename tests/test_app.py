"""The composition root's one builder of the outbound client, shared by the proxy route and the jobs."""

from __future__ import annotations

from pathlib import Path

from pypimirror.app import upstream_client
from pypimirror.configreader import parse_config
from pypimirror.upstream import UpstreamSettings


def test_upstream_client_takes_proxy_user_agent_and_time_limits_from_the_config_and_the_attempts_given(
    tmp_path: Path,
) -> None:
    config = parse_config(
        {
            "repo_path": str(tmp_path / "repo"),
            "upstream": {
                "pypi_url": "http://127.0.0.1:9/",
                "packages_url": "http://127.0.0.1:9/packages",
                "proxy": "socks5h://bob:pw@127.0.0.1:1080",
            },
            "cache": {"size_limit": "1g"},
            "timeouts": {"upstream": "42s"},
            "sync": {"retry": 5, "user_agent": "mirror-test/1"},
        },
        base_dir=tmp_path,
    )
    expected = UpstreamSettings(
        user_agent="mirror-test/1",
        proxy="socks5h://bob:pw@127.0.0.1:1080",
        connect_timeout=42.0,
        stall_timeout=42.0,
        attempts=1,
    )
    assert upstream_client(config, attempts=1).settings == expected  # the proxy route: the client retries
    assert upstream_client(config, attempts=config.sync.retry).settings.attempts == 5  # the jobs
