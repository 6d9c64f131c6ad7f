"""Votes from the server become cached files: serve → votes → sync --once → served locally."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from mirrorprocess import PREFIX, request, run_cli, running_server, stop_server, write_config

pytestmark = pytest.mark.e2e


def wheel_of(fake: FakeIndex, project: str) -> tuple[str, bytes]:
    dist = next(d for d in fake.files(project) if d.filename.endswith(".whl"))
    return dist.path.removeprefix("/packages/"), dist.content


# The seed keeps min_vote_count strictly; the default policy has no threshold, so a file one
# network asked for gets room the others leave. Neither counts a bot.
@pytest.mark.parametrize(("policy", "lonely_cached"), [("seed", False), ("default", True)])
def test_popular_files_are_cached_verified_and_then_served_locally(
    fake_index: FakeIndex, tmp_path: Path, policy: str, lonely_cached: bool
) -> None:
    fake_index.add_project("popular", ["1.0"], payload_size=300_000)
    fake_index.add_project("lonely", ["1.0"])
    fake_index.add_project("botted", ["1.0"])
    config = write_config(tmp_path, fake_index, trusted_proxies=["127.0.0.1/32"],
                          cache={"min_vote_count": 2, "policy": policy})
    assert run_cli("sync", "--once", "-c", str(config)).returncode == 0
    popular, popular_bytes = wheel_of(fake_index, "popular")
    lonely, _ = wheel_of(fake_index, "lonely")
    botted, _ = wheel_of(fake_index, "botted")

    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        for network in ("10.1.1.7", "10.2.2.7", "10.3.3.7"):
            status, headers, _ = request(port, f"{PREFIX}/packages/{popular}", {"X-Forwarded-For": network})
            assert status == 302 and headers["location"].endswith(popular)
        request(port, f"{PREFIX}/packages/{lonely}", {"X-Forwarded-For": "10.4.4.4"})
        for network in ("10.5.5.5", "10.6.6.6"):
            request(port, f"{PREFIX}/packages/{botted}",
                    {"X-Forwarded-For": network, "User-Agent": "Bandersnatch/6.5 (crawler)"})
        stop_server(process, stderr_path)

    dry = run_cli("sync", "--once", "--dry-run", "-c", str(config))
    assert dry.returncode == 0, dry.stderr
    assert f"{1 + lonely_cached} downloads" in dry.stdout and popular in dry.stdout
    tier = tmp_path / "repo" / "packages"
    assert not (tier / popular).exists()

    result = run_cli("sync", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((tier / popular).read_bytes()).hexdigest() == hashlib.sha256(popular_bytes).hexdigest()
    assert (tier / (popular + ".metadata")).is_file()
    assert (tier / lonely).exists() is lonely_cached and not (tier / botted).exists()

    fake_index.reset_log()
    with running_server(config, tmp_path / "serve2.err") as (process, port):
        status, headers, body = request(port, f"{PREFIX}/packages/{popular}")
        assert status == 200 and body == popular_bytes
        status, headers, body = request(port, f"{PREFIX}/packages/{popular}", {"Range": "bytes=10-19"})
        assert status == 206 and body == popular_bytes[10:20]
        assert headers["content-range"] == f"bytes 10-19/{len(popular_bytes)}"
        stop_server(process, tmp_path / "serve2.err")
    assert fake_index.count_requests(popular) == 0  # served from the tier, not the upstream


def test_corrupted_upstream_body_is_discarded_and_the_run_says_so(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.add_project("victim", ["1.0"])
    config = write_config(tmp_path, fake_index, trusted_proxies=["127.0.0.1/32"], cache={"min_vote_count": 1})
    assert run_cli("sync", "--once", "-c", str(config)).returncode == 0
    victim, _ = wheel_of(fake_index, "victim")
    with running_server(config, tmp_path / "serve.err") as (process, port):
        request(port, f"{PREFIX}/packages/{victim}", {"X-Forwarded-For": "10.9.9.9"})
        stop_server(process, tmp_path / "serve.err")
    fake_index.corrupt_next(f"/packages/{victim}", times=None)
    result = run_cli("sync", "--once", "-c", str(config))
    assert "sha256" in result.stderr.lower()
    assert not (tmp_path / "repo" / "packages" / victim).exists()
    assert [p for p in (tmp_path / "repo" / "packages").rglob("*") if p.is_file()] == []
