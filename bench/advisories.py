"""How long the advisory sync takes on an export of OSV's size, and matching it against the pages.

Writes (once, into ``--cache-dir``) the stored ``index.v1_json`` pages of ``--projects``
synthetic projects (the simulator's realistic shapes: a handful to dozens of versions, pure and
binary wheels) and a zip of ``--records`` OSV records, each naming one of those projects with
an ECOSYSTEM range (``introduced``/``fixed`` or ``last_affected``) or an explicit version list.
Then, into a fresh SQLite database:

(a) ``run_advisory_sync``: read the zip, store every record, measure the ``flag`` policy on the
    stored pages;
(b) the policy measure alone (load the applicable records, read the pages they name, match each
    file's version): what "matching 100k records against the pages of 10k projects" means.

Target: (b) under 60 s for 100k records and 10k projects. Exit status 0 when it is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic_index import synthetic_project_names, write_synthetic_index

from pypimirror.config import AdvisoriesConfig
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.jobs.advisory_sync import measure_policy, run_advisory_sync
from pypimirror.upstream import UpstreamClient, UpstreamSettings

TARGET_MATCH_S = 60.0


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "pypimirror-bench-advisories")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    repo, export = prepare(args.cache_dir, args.projects, args.records)
    with tempfile.TemporaryDirectory() as scratch:
        figures = asyncio.run(run(repo, export, Path(scratch)))
    print(f"advisory sync of {args.records} records (read, store, measure): {figures['sync_s']:.1f} s")
    print(
        f"matching {args.records} records against the pages of {args.projects} projects: {figures['match_s']:.1f} s "
        f"({figures['flagged_files']} files flagged, {figures['blocked_files']} blocked)"
    )
    passed = figures["match_s"] < TARGET_MATCH_S
    print(f"{'PASS' if passed else 'FAIL'}: matching under {TARGET_MATCH_S:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
