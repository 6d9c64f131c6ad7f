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
from installers import installer_env
from mirrorprocess import PREFIX, request, running_server, stop_server, sync_once, write_config
from osvexport import record, write_zip

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
