"""Advisories as operators meet them: ``sync --once`` stores an OSV export, and real ``pip-audit``
audits a pinned requirements file against the mirror's OSV API with the upstream stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from installers import installer_env, pip_install, uv_pip_install
from mirrorprocess import PREFIX, request, running_server, stop_server, sync_once, write_config
from osvexport import record, write_zip

from pypimirror import queries as dbq
from pypimirror.db import Database

pytestmark = pytest.mark.e2e

#: Projects of the fake upstream and the advisories about them: a range, an explicit version list
#: with an alias, a withdrawn record, a malicious-package record, and one of another ecosystem.
PROJECTS = {"alpha": ["1.0", "1.1"], "beta": ["2.0", "2.1", "2.2"], "gamma": ["1.0"], "evil-pkg": ["0.1"], "delta": ["3.0"]}
RECORDS = [
    record("PYSEC-2026-1", "alpha", ranges=[{"introduced": "0"}, {"fixed": "1.1"}], aliases=["CVE-2026-0001"]),
    record("GHSA-beta-2026", "Beta", versions=["2.0", "2.1"], aliases=["CVE-2026-0002"]),
    record("PYSEC-2026-3", "gamma", versions=["1.0"], withdrawn="2026-01-05T00:00:00Z"),
    record("MAL-2026-4", "evil-pkg", versions=["0.1"]),
    record("GO-2026-5", "example.org/delta", ecosystem="Go", versions=["3.0"]),
]


def pip_audit_executable() -> str:
    found = shutil.which("pip-audit", path=os.path.dirname(sys.executable))
    assert found is not None, "pip-audit is part of the test extra"
    return found


def test_pip_audit_against_the_mirror_reports_exactly_the_expected_ids_with_the_upstream_stopped(
    fake_index: FakeIndex, tmp_path: Path
) -> None:
    for name, versions in PROJECTS.items():
        fake_index.add_project(name, versions)
    export = write_zip(tmp_path / "osv-pypi.zip", RECORDS, extra={"broken.json": b"{"})
    config = write_config(tmp_path, fake_index, advisories={"source": str(export)})
    sync_once(config)
    fake_index.stop()
    db = Database.open(f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}")
    try:
        with db.connect() as conn:
            runs = list(reversed(dbq.latest_job_runs(conn)))
    finally:
        db.dispose()
    # sync --once: the advisory sync after the index sync, before cache management.
    assert [run.job for run in runs] == ["index_sync", "advisories", "cache"]
    assert runs[1].outcome == "ok"
    assert runs[1].counts["stored"] == 4 and runs[1].counts["unreadable"] == 1 and runs[1].counts["other_ecosystem"] == 1

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("alpha==1.0\nbeta==2.1\ngamma==1.0\nevil-pkg==0.1\ndelta==3.0\n")
    stderr = tmp_path / "serve.stderr"
    with running_server(config, stderr) as (process, port):
        status, _, body = request(port, f"{PREFIX}/osv/v1/vulns/MAL-2026-4")
        assert status == 200 and json.loads(body)["id"] == "MAL-2026-4"
        audit = subprocess.run(
            [
                pip_audit_executable(), "-s", "osv", "--osv-url", f"http://127.0.0.1:{port}{PREFIX}/osv/v1/query",
                "-r", str(requirements), "--no-deps", "--disable-pip", "-f", "json", "--progress-spinner", "off",
                "--cache-dir", str(tmp_path / "audit-cache"),
            ],
            env=installer_env(), capture_output=True, text=True, timeout=180,
        )
        stop_server(process, stderr)
    assert audit.returncode == 1, audit.stderr  # 1: vulnerabilities found
    report = json.loads(audit.stdout)
    # pip-audit names a finding by its preferred ID (a PYSEC or CVE one) and lists the others as aliases.
    found = {dep["name"]: sorted(sorted([vuln["id"], *vuln["aliases"]]) for vuln in dep["vulns"]) for dep in report["dependencies"]}
    assert found == {
        "alpha": [["CVE-2026-0001", "PYSEC-2026-1"]],
        "beta": [["CVE-2026-0002", "GHSA-beta-2026"]],
        "gamma": [],  # its only record is withdrawn
        "evil-pkg": [["MAL-2026-4"]],
        "delta": [],  # only a Go record names a delta
    }
    fixes = {vuln["id"]: vuln["fix_versions"] for dep in report["dependencies"] for vuln in dep["vulns"]}
    assert fixes["PYSEC-2026-1"] == ["1.1"]


# -- the policy, through the running mirror ---------------------------------------------------------

POLICY_RECORDS = [
    record("PYSEC-2026-7", "alpha", ranges=[{"introduced": "1.1"}], summary="Token leak in alpha"),
    record("MAL-2026-8", "evil-pkg", versions=["0.1"], summary="Steals credentials"),
]


def installed_versions(target: Path) -> dict[str, str]:
    found = {}
    for info in target.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        found[name] = version
    return found


@pytest.fixture
def policy_mirror(fake_index: FakeIndex, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A mirror of alpha 1.0/1.1/1.2 and evil-pkg 0.1, synced with the advisories, in the mode given."""
    fake_index.add_project("alpha", ["1.0", "1.1", "1.2"])
    fake_index.add_project("evil-pkg", ["0.1"])
    export = write_zip(tmp_path / "osv-pypi.zip", POLICY_RECORDS)
    config = write_config(tmp_path, fake_index, advisories={"source": str(export), "mode": request.param})
    sync_once(config)
    return config


@pytest.mark.parametrize("policy_mirror", ["flag"], indirect=True)
def test_flag_installers_pick_the_newest_unaffected_version_and_a_pin_still_installs_with_the_reason(
    policy_mirror: Path, tmp_path: Path
) -> None:
    stderr = tmp_path / "serve.stderr"
    with running_server(policy_mirror, stderr) as (process, port):
        index = f"http://127.0.0.1:{port}{PREFIX}/simple/"
        pip_result = pip_install(index, tmp_path / "pip", "alpha")
        uv_result = uv_pip_install(index, tmp_path / "uv", "alpha")
        pinned = pip_install(index, tmp_path / "pinned", "alpha==1.2")
        uv_pinned = uv_pip_install(index, tmp_path / "uv-pinned", "alpha==1.2")
        evil = request(port, f"{PREFIX}/simple/evil-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        evil_url = json.loads(evil[2])["files"][0]["url"]
        evil_file = request(port, evil_url)
        stop_server(process, stderr)
    assert pip_result.returncode == 0, pip_result.stderr
    assert installed_versions(tmp_path / "pip") == {"alpha": "1.0"}
    assert uv_result.returncode == 0, uv_result.stderr
    assert installed_versions(tmp_path / "uv") == {"alpha": "1.0"}
    assert pinned.returncode == 0, pinned.stderr
    assert installed_versions(tmp_path / "pinned") == {"alpha": "1.2"}
    assert "PYSEC-2026-7: Token leak in alpha" in pinned.stdout + pinned.stderr  # pip names the yank reason
    assert uv_pinned.returncode == 0, uv_pinned.stderr
    assert installed_versions(tmp_path / "uv-pinned") == {"alpha": "1.2"}
    # A malicious package is blocked in flag mode too.
    assert evil_file[0] == 403 and evil_file[1]["x-pypi-mirror-advisories"] == "MAL-2026-8"


@pytest.mark.parametrize("policy_mirror", ["block"], indirect=True)
def test_block_answers_403_for_an_affected_file_and_pip_cannot_install_it(policy_mirror: Path, tmp_path: Path) -> None:
    stderr = tmp_path / "serve.stderr"
    with running_server(policy_mirror, stderr) as (process, port):
        index = f"http://127.0.0.1:{port}{PREFIX}/simple/"
        page = request(port, f"{PREFIX}/simple/alpha/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        urls = {entry["filename"]: entry["url"] for entry in json.loads(page[2])["files"]}
        blocked = request(port, urls["alpha-1.2-py3-none-any.whl"])
        allowed = request(port, urls["alpha-1.0-py3-none-any.whl"])
        pinned = pip_install(index, tmp_path / "pinned", "alpha==1.2")
        unpinned = pip_install(index, tmp_path / "pip", "alpha")
        stop_server(process, stderr)
    assert blocked[0] == 403 and blocked[1]["x-pypi-mirror-advisories"] == "PYSEC-2026-7"
    assert b"PYSEC-2026-7: Token leak in alpha" in blocked[2]
    assert allowed[0] == 302
    assert pinned.returncode != 0 and "403" in pinned.stdout + pinned.stderr
    assert unpinned.returncode == 0 and installed_versions(tmp_path / "pip") == {"alpha": "1.0"}
