"""Benchmark of the cache job (not a test): phases A–E on a million cached files and 5M votes.

A tree of N small files in PyPI's ``ab/cd/<hash>/<filename>`` layout is generated once over two
tiers (20 % in tier 0, one in ten with a ``.metadata`` file) and kept under ``--cache-dir``
between runs (it takes minutes to make). With it come a SQLite file of 5×N votes (by default:
90 % inside the 7-day window on N/5 popular cached files, 10 % older, so phase E deletes them)
and stored pages for a few thousand wanted files that are not cached; their downloads fail at
once (a swapped fetch answers 404) so the error threshold is exercised without network. Tier 0
holds 15 % or 25 % of the bytes (alternately, so every invocation's first run moves about a tenth
of the files, unpopular ones filling or leaving the spare room of tier 0), tier 1 the rest, so
phase D promotes and demotes but never evicts, and the cached tree stays complete for the next run.

Each measured run is ``run_cache`` in a fresh process (peak RSS is its own), twice: "first"
on a fresh copy of the database with no ``local_files`` rows (phase A inserts one per file),
then "steady" on the database that run left (what the next hourly run sees).

Run: ``.venv/bin/python bench/cache.py [--files 1000000] [--votes N] [--json FILE]``.
"""

from __future__ import annotations

__all__: list[str] = []

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from pypimirror.jobs.cache import run_cache
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.pages import DistFile, ProjectPage, render_project_json
from pypimirror.upstream import UpstreamClient, UpstreamSettings

FILES_PER_PROJECT = 20
FILE_BYTES = 200
METADATA_BYTES = 50
WINDOW_DAYS = 7
TARGET_SECONDS = 120.0
TARGET_RSS_MB = 1024.0
BYTES_PER_FILE_ON_DISK = 8_500  # a leaf directory and a file, 4 KiB blocks each, plus inodes
PREFIX = "/pypi"


def file_path(i: int) -> str:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    name = f"proj{i // FILES_PER_PROJECT:06d}"
    return f"{digest[:2]}/{digest[2:4]}/{digest[4:]}/{name}-1.{i % FILES_PER_PROJECT}-py3-none-any.whl"


def tier_of(i: int) -> int:
    return 0 if i % 5 == 0 else 1


def _write_range(args: tuple[Path, int, int]) -> None:
    tree, start, stop = args
    body, metadata = b"x" * FILE_BYTES, b"m" * METADATA_BYTES
    for i in range(start, stop):
        path = tree / f"t{tier_of(i)}" / file_path(i)
        os.makedirs(path.parent, exist_ok=True)
        path.write_bytes(body)
        if i % 10 == 0:
            path.with_name(path.name + ".metadata").write_bytes(metadata)


def generate_tree(tree: Path, files: int) -> None:
    """The cached tiers, written by two processes; ``.complete`` marks a finished tree."""
    if (tree / ".complete").exists():
        return
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    started = time.monotonic()
    step = 10_000
    with multiprocessing.Pool(2) as pool:
        pool.map(_write_range, [(tree, s, min(s + step, files)) for s in range(0, files, step)])
    (tree / ".complete").write_text(str(files))
    print(f"generated {files} files in {time.monotonic() - started:.0f} s under {tree}", flush=True)


def wanted_paths(files: int) -> tuple[list[str], list[str]]:
    """Popular files that are not cached: listed on a stored page, and made up (unlisted)."""
    count = max(100, files // 500)
    listed = [file_path(files + i).replace("/proj", "/want", 1) for i in range(count)]
    unlisted = [file_path(files + count + i) for i in range(count // 2)]
    return listed, unlisted


def write_pages(repo: Path, listed: list[str]) -> None:
    by_project: dict[str, list[DistFile]] = {}
    for path in listed:
        filename = path.rsplit("/", 1)[1]
        project = filename.split("-")[0]
        by_project.setdefault(project, []).append(DistFile(
            filename=filename, url=f"{PREFIX}/packages/{path}", sha256="ab" * 32, requires_python=None,
            size=FILE_BYTES, upload_time=None, yanked=False, core_metadata=False, provenance=None,
            version=filename.split("-")[1],
        ))
    for project, dists in by_project.items():
        page = ProjectPage(name=project, display_name=project, last_serial=1, files=tuple(dists),  # type: ignore[arg-type]
                           versions=tuple(sorted({d.version or "" for d in dists})))
        target = repo / "simple" / project / "index.v1_json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(render_project_json(page, url_for=lambda url: url))


def generate_database(db_file: Path, files: int, votes: int, now: int) -> None:
    """Votes for N/5 cached files (mostly in tier 1) and for the wanted files; raw sqlite3 inserts."""
    if db_file.exists():
        return
    started = time.monotonic()
    Database.open(f"sqlite:///{db_file}").dispose()  # the real schema
    rng = random.Random(42)
    listed, unlisted = wanted_paths(files)
    targets = [file_path(i) for i in range(1, files, 5)] + listed + unlisted
    window = WINDOW_DAYS * 86_400
    conn = sqlite3.connect(db_file)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    rows: list[tuple[str, str, int]] = []
    for n in range(votes):
        path = targets[n % len(targets)]
        age = rng.randrange(window) if rng.random() < 0.9 else window + rng.randrange(window)
        rows.append((path, f"10.{n % 251}.{(n // 251) % 251}.0", now - age))
        if len(rows) == 200_000:
            conn.executemany("INSERT OR IGNORE INTO votes VALUES (?, ?, ?)", rows)
            conn.commit()
            rows.clear()
    conn.executemany("INSERT OR IGNORE INTO votes VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    print(f"generated {votes} votes in {time.monotonic() - started:.0f} s", flush=True)


async def _fail_fast(request: HTTPRequest) -> HTTPResponse:
    """The upstream, swapped: every file is 404, at once."""
    return HTTPResponse(request, 404, headers=HTTPHeaders(), buffer=BytesIO(b""))


async def _run_once(repo: Path, tree: Path, db_file: Path, total_bytes: int, hot_bytes: int) -> dict[str, Any]:
    data = {
        "repo_path": str(repo),
        "prefix": PREFIX,
        "node_id": "bench",
        "database": {"url": f"sqlite:///{db_file}"},
        "upstream": {"pypi_url": "http://127.0.0.1:9", "packages_url": "http://127.0.0.1:9/packages"},
        "cache": {"tiers": [{"path": str(tree / "t0"), "size_limit": hot_bytes},
                            {"path": str(tree / "t1"), "size_limit": total_bytes}]},
    }
    config = parse_config(data)
    db = Database.open(config.database.url)
    settings = UpstreamSettings(user_agent="bench", proxy=None, connect_timeout=1, stall_timeout=1, attempts=1)
    started = time.monotonic()
    report = await run_cache(config, db, UpstreamClient(settings, fetch=_fail_fast))
    wall = time.monotonic() - started
    db.dispose()
    return {"wall_s": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "counts": report.counts()}


def run_measured(tree: Path, repo: Path, db_file: Path, total_bytes: int, hot_bytes: int) -> dict[str, Any]:
    """One run in a fresh process; returns its figures."""
    out = subprocess.run(
        [sys.executable, __file__, "--run-one", str(tree), str(repo), str(db_file), str(total_bytes), str(hot_bytes)],
        check=True, capture_output=True, text=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def print_run(label: str, result: dict[str, Any]) -> None:
    c = result["counts"]
    phases = " ".join(f"{p}={c.get(f'phase_{p}_ms', 0) / 1000:.1f}s" for p in "avbde")
    print(f"{label:7} wall {result['wall_s']:6.1f} s  peak RSS {result['rss_mb']:6.0f} MB  [{phases}]  "
          f"files={c['files']} popular={c['popular']} moved={c['moved']} evicted={c['evicted']} "
          f"rows_updated={c['rows_updated']} download_errors={c['download_errors']} "
          f"unlisted={c['unlisted']} votes_deleted={c['votes_deleted']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--votes", type=int, help="vote rows (default: 5 per file)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/pypimirror-bench-cache"))
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--run-one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        tree, repo, db_file, total, hot = args.run_one
        print(json.dumps(asyncio.run(_run_once(Path(repo), Path(tree), Path(db_file), int(total), int(hot)))))
        return
    files, votes = args.files, args.votes or 5 * args.files
    base = args.cache_dir / f"n{files}"
    need = files * BYTES_PER_FILE_ON_DISK
    if not (base / "tree" / ".complete").exists() and shutil.disk_usage("/tmp").free < 2 * need:
        sys.exit(f"not enough space under /tmp for {files} files (~{need / 1e9:.1f} GB); try a smaller --files")
    now = int(time.time())
    generate_tree(base / "tree", files)
    template = base / f"votes-{votes}.sqlite"
    generate_database(template, files, votes, now)
    repo = base / "repo"
    listed, _ = wanted_paths(files)
    if not (repo / "simple").exists():
        write_pages(repo, listed)
    total = files * FILE_BYTES + (files // 10) * METADATA_BYTES
    db_file = base / "run.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, db_file)
    share_file = base / "hot-share"
    share = 15 if share_file.exists() and share_file.read_text() == "25" else 25
    share_file.write_text(str(share))
    print(f"tier 0 holds {share} % of the bytes this time", flush=True)
    results: dict[str, Any] = {"files": files, "votes": votes, "hot_share": share}
    for label in ("first", "steady"):
        results[label] = run_measured(base / "tree", repo, db_file, total, total * share // 100)
        print_run(label, results[label])
    worst = max(results["first"]["wall_s"], results["steady"]["wall_s"])
    rss = max(results["first"]["rss_mb"], results["steady"]["rss_mb"])
    print(f"target: under {TARGET_SECONDS:.0f} s and {TARGET_RSS_MB:.0f} MB: "
          f"{'met' if worst < TARGET_SECONDS and rss < TARGET_RSS_MB else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
