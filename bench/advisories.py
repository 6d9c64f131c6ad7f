"""The advisory sync and policy at scale: syncing and matching an export of OSV's size, and what
flag mode costs a hot page.

Part ``match``:

Writes (once, into ``--cache-dir``) the stored ``index.v1_json`` pages of ``--projects``
synthetic projects (the simulator's realistic shapes: a handful to dozens of versions, pure and
binary wheels) and a zip of ``--records`` OSV records, each naming one of those projects with
an ECOSYSTEM range (``introduced``/``fixed`` or ``last_affected``) or an explicit version list.
Then, into a fresh SQLite database:

(a) ``run_advisory_sync``: read the zip, store every record, measure the ``flag`` policy on the
    stored pages;
(b) the policy measure alone (load the applicable records, read the pages they name, match each
    file's version): what "matching 100k records against the pages of 10k projects" means.

Target: (b) under 60 s for 100k records and 10k projects.

Part ``page``: the serve benchmark's hot project page (``bench/_serve_fixture.py``) from two
mirrors pinned to the same CPU and loaded at the same moment (as ``serve_paired.py`` does): one
with advisories off, one in ``flag`` mode with an advisory naming that project (so the page
served is the flagged one). Target: flag mode keeps at least 90 % of the plain page's req/s
(the median of the rounds). Needs wrk and 2 CPUs.

Exit status 0 when every target of the parts run is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import statistics
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic_index import synthetic_project_names, write_synthetic_index

from _serve_fixture import PAGE_TYPE, build_fixture
from _serve_systems import Server, Servers, free_port, load_average, machine_summary, mirror_command, pinned_to
from _wrk import find_wrk, run_wrk_at_once

from pypimirror import advisoryqueries as aq
from pypimirror.config import AdvisoriesConfig
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.jobs.advisory_sync import measure_policy, run_advisory_sync
from pypimirror.osv import parse_record
from pypimirror.upstream import UpstreamClient, UpstreamSettings

TARGET_MATCH_S = 60.0
TARGET_PAGE_SHARE = 0.9


def write_export(path: Path, projects: list[str], records: int, seed: int) -> None:
    """``records`` OSV records about random projects of ``projects``, as OSV's zip export holds them."""
    import zipfile

    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(records):
            affected: dict[str, object] = {"package": {"ecosystem": "PyPI", "name": rng.choice(projects)}}
            if rng.random() < 0.7:
                end = {"fixed": f"{rng.randint(1, 12)}.{rng.randint(0, 9)}"} if rng.random() < 0.8 else {
                    "last_affected": f"{rng.randint(1, 12)}.{rng.randint(0, 9)}"}
                affected["ranges"] = [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, end]}]
            else:
                affected["versions"] = [f"{rng.randint(0, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 5)}" for _ in range(rng.randint(1, 20))]
            record = {
                "id": f"PYSEC-BENCH-{index}",
                "modified": "2026-01-02T03:04:05Z",
                "published": "2025-01-01T00:00:00Z",
                "aliases": [f"CVE-BENCH-{index}"],
                "summary": f"Advisory {index}",
                "affected": [affected],
            }
            archive.writestr(f"PYSEC-BENCH-{index}.json", json.dumps(record))


def prepare(cache_dir: Path, projects: int, records: int) -> tuple[Path, Path]:
    repo = cache_dir / f"repo-{projects}"
    export = cache_dir / f"osv-{records}-{projects}.zip"
    names = synthetic_project_names(projects)
    if not (repo / "simple").exists():
        print(f"writing {projects} project pages ...", flush=True)
        write_synthetic_index(repo, names, seed=1)
    if not export.exists():
        print(f"writing {records} OSV records ...", flush=True)
        write_export(export, names, records, seed=2)
    return repo, export


async def run(repo: Path, export: Path, scratch: Path) -> dict[str, float]:
    config = parse_config(
        {
            "repo_path": str(repo),
            "database": {"url": f"sqlite:///{scratch / 'bench.db'}"},
            "upstream": {"pypi_url": "http://127.0.0.1:9", "packages_url": "http://127.0.0.1:9/packages"},
            "cache": {"size_limit": "1g"},
            "advisories": {"source": str(export), "mode": "flag"},
        },
        base_dir=scratch,
    )
    client = UpstreamClient(UpstreamSettings(user_agent="bench", proxy=None, connect_timeout=5, stall_timeout=5))
    db = Database.open(config.database.url)
    try:
        started = time.perf_counter()
        report = await run_advisory_sync(config, db, client, stop=asyncio.Event())
        sync_s = time.perf_counter() - started
        settings: AdvisoriesConfig = config.advisories
        started = time.perf_counter()
        counts = await measure_policy(settings, db, repo)
        match_s = time.perf_counter() - started
    finally:
        db.dispose()
    return {
        "records_stored": report.stored,
        "sync_s": sync_s,
        "match_s": match_s,
        "flagged_files": counts.flagged,
        "blocked_files": counts.blocked,
    }


def start_page_mirrors(servers: Servers, workdir: Path, cpu: int) -> tuple[dict[str, Server], str]:
    """The plain and the flag-mode mirror of the serve fixture, both on ``cpu``; and the page's path."""
    started = {}
    page_url = ""
    for mode in ("off", "flag"):
        port = free_port()
        fixture = build_fixture(workdir / mode, port=port, workers=1)
        page_url = fixture.page_url
        if mode == "flag":
            config = yaml.safe_load(fixture.config.read_text())
            config["advisories"] = {"source": str(workdir / "export.zip"), "mode": "flag"}
            fixture.config.write_text(yaml.safe_dump(config, sort_keys=False))
            db = Database.open(f"sqlite:///{fixture.database}")
            record = {"id": "PYSEC-BENCH-1", "modified": "2026-01-02T03:04:05Z", "summary": "Bench advisory",
                      "affected": [{"package": {"ecosystem": "PyPI", "name": "examplepkg"},
                                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0.0"}]}]}]}
            with db.begin() as conn:
                aq.store_advisories(conn, [parse_record(record)])
            db.dispose()
        command = [*pinned_to([cpu]), *mirror_command(sys.executable, fixture.config)]
        started[mode] = servers.start(mode, command, port, fixture.page_url)
    request = urllib.request.Request(started["flag"].url(page_url), headers={"Accept": PAGE_TYPE})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert b"PYSEC-BENCH-1: Bench advisory" in answer.read(), "the flag-mode page is not flagged"
    return started, page_url


def measure_page(rounds: int, duration: int, connections: int) -> dict[str, float] | None:
    wrk = find_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    if wrk is None or len(cpus) < 2:
        print("page part: needs wrk and 2 CPUs; skipped", file=sys.stderr)
        return None
    server_cpu, load_cpus = cpus[-1], set(cpus[:-1])
    shares = []
    with tempfile.TemporaryDirectory(prefix="pypimirror-bench-advisory-page-") as scratch, Servers(Path(scratch)) as servers:
        pair, page_url = start_page_mirrors(servers, Path(scratch), server_cpu)
        for _ in range(rounds):
            results = run_wrk_at_once(
                wrk, {mode: server.url(page_url) for mode, server in pair.items()},
                connections=connections, duration_s=duration, headers={"Accept": PAGE_TYPE}, pin=pinned_to(load_cpus),
            )
            print(f"  flag {results['flag'].rps:,.0f} req/s, off {results['off'].rps:,.0f} req/s", file=sys.stderr)
            shares.append(results["flag"].rps / results["off"].rps)
    return {"page_share_median": statistics.median(shares), "page_share_min": min(shares), "page_share_max": max(shares)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("match", "page"), help="run one part")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="page part: rounds (default 5)")
    parser.add_argument("--duration", type=int, default=4, help="page part: seconds per round (default 4)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pypimirror-bench-advisories")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    passed = True
    print(f"{machine_summary()}; load average before: {load_average()}")
    if args.only in (None, "match"):
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        repo, export = prepare(args.cache_dir, args.projects, args.records)
        with tempfile.TemporaryDirectory() as scratch:
            figures.update(asyncio.run(run(repo, export, Path(scratch))))
        print(f"advisory sync of {args.records} records (read, store, measure): {figures['sync_s']:.1f} s")
        print(
            f"matching {args.records} records against the pages of {args.projects} projects: {figures['match_s']:.1f} s "
            f"({figures['flagged_files']} files flagged, {figures['blocked_files']} blocked)"
        )
        ok = figures["match_s"] < TARGET_MATCH_S
        passed &= ok
        print(f"{'PASS' if ok else 'FAIL'}: matching under {TARGET_MATCH_S:.0f} s")
    if args.only in (None, "page"):
        page = measure_page(args.rounds, args.duration, connections=16)
        if page is not None:
            figures.update(page)
            ok = page["page_share_median"] >= TARGET_PAGE_SHARE
            passed &= ok
            print(
                f"hot flagged page / plain page: {page['page_share_median']:.1%} "
                f"(rounds {page['page_share_min']:.1%}-{page['page_share_max']:.1%}); "
                f"{'PASS' if ok else 'FAIL'}: at least {TARGET_PAGE_SHARE:.0%}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
