"""Benchmark of the index sync (not a test): is it fast and lean enough for all of PyPI?

(a) Throughput: the real ``pypimirror sync --once`` runs as a subprocess against the fake
    upstream (``tests/fakeindex.py``, served from a thread of this process on 127.0.0.1) and
    fetches N one-release projects into an empty repo with SQLite. The reference is the ceiling
    the fake allows: a bare loop of ``CurlAsyncHTTPClient`` GETs of the same two URLs per project
    at the same concurrency, also in a fresh process.
(b) Scale: in a fresh process (so its peak RSS is clean), the index sync's own phases run on
    a synthetic PEP 691 root listing of M projects and a real SQLite file of M serials, ~1 %
    behind: ``_IndexSyncRun._plan`` (parse, load, scan, plan), then the serials a fetch would
    store, ``_remove``, and ``_write_root_pages`` (root HTML and JSON with gzip siblings). Only
    the project fetches are left out, so every large object lives as long as in a real run.
    Time per phase and step and the peak RSS (``VmHWM``) are reported.
(c) The index history's cost. Time: after a first sync of N projects (which starts the
    history), every project gets a new release and one in ten a yank upstream; the same
    ``sync --once`` then runs on copies of that mirror with ``sync.record_history`` on and off,
    alternately. Size: the history's own writer (``historydb.record_changes``) stores a history
    of F files in a real SQLite file: a first-seen row per file (the worst case: every file
    arrived after the history began), then removals and yanks of a share of them; the file's
    growth is reported per file.

Run: ``.venv/bin/python bench/index_sync.py [--projects 2000] [--listing 800000] [--runs 3]
[--history-files 1000000]``.
Only 127.0.0.1 is contacted. Figures go to stdout; ``--json FILE`` also saves them.
"""

from __future__ import annotations

__all__: list[str] = []

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the fake upstream lives with the tests

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PROJECTS = 2000
DEFAULT_LISTING = 800_000
TARGET_PROJECTS_PER_S = 150.0
TARGET_ROOT_SECONDS = 30.0
TARGET_ROOT_RSS_MB = 400.0
TARGET_HISTORY_OVERHEAD = 0.10
DEFAULT_HISTORY_FILES = 1_000_000
YANKED_SHARE = 0.1  # of the projects changed in (c), those with a yank as well as a new release
HISTORY_REMOVED_SHARE = 0.01  # of the files in the size figure, those removed upstream
HISTORY_YANKED_SHARE = 0.01  # ... and those yanked
PREFIX = "/pypi"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
CHANGED_SHARE = 0.01  # listed serial newer than the stored one: fetched
REMOVED_SHARE = 0.001  # stored but no longer listed: removed
NEW_SHARE = 0.001  # listed but not stored yet: fetched
MAX_SERIAL = 30_000_000
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


# --------------------------------------------------------------------------------------------
# (a) projects/s against the fake upstream


@dataclass(frozen=True, slots=True)
class SyncFigures:
    """One ``sync --once`` run: the whole process, and the part after planning (from its log)."""

    wall_s: float
    phase_s: float  # from the "upstream lists" line (plan made) to "done": fetches + root
    fetched: int


def write_sync_config(
    directory: Path, pypi_url: str, packages_url: str, concurrency: int, *, record_history: bool = True
) -> Path:
    config = {
        "repo_path": str(directory / "repo"),
        "prefix": PREFIX,
        "upstream": {"pypi_url": pypi_url, "packages_url": packages_url},
        "cache": {"size_limit": "1g"},
        "sync": {"concurrent_downloads": concurrency, "record_history": record_history},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli_sync(config: Path) -> SyncFigures:
    """``pypimirror sync --once`` in a new process; fails loudly unless every project arrived."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pypimirror", "sync", "--once", "-c", str(config)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"sync exited {result.returncode}:\n{result.stderr[-3000:]}")
    fetched = int(re.search(r"index sync: done: .*fetched=(\d+)", result.stderr).group(1))  # type: ignore[union-attr]
    begin = _log_time(result.stderr, "index sync: upstream lists")
    end = _log_time(result.stderr, "index sync: done")
    return SyncFigures(wall, end - begin, fetched)


def _log_time(stderr: str, marker: str) -> float:
    line = next(line for line in stderr.splitlines() if marker in line)
    match = _LOG_TIME.match(line)
    assert match is not None, line
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def reference_child(pypi_url: str, names_file: str, concurrency: int) -> None:
    """The ceiling: the sync's two GETs per project, nothing else, at the same concurrency."""
    from tornado.curl_httpclient import CurlAsyncHTTPClient
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    names = Path(names_file).read_text().split()

    async def fetch_all() -> int:
        AsyncHTTPClient.configure(CurlAsyncHTTPClient, max_clients=concurrency * 2)
        client = AsyncHTTPClient()
        queue = iter(names)
        received = 0

        async def get(url: str, accept: str) -> int:
            response = await client.fetch(HTTPRequest(url, headers={"Accept": accept}))
            return len(response.body)

        async def worker() -> None:
            nonlocal received
            for name in queue:
                sizes = await asyncio.gather(
                    get(f"{pypi_url}/simple/{name}/", SIMPLE_JSON),
                    get(f"{pypi_url}/pypi/{name}/json", "application/json"),
                )
                received += sum(sizes)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return received

    started = time.perf_counter()
    received = asyncio.run(fetch_all())
    print(json.dumps({"seconds": time.perf_counter() - started, "bytes": received}))


def run_reference(pypi_url: str, names_file: Path, concurrency: int) -> float:
    """Seconds for the bare fetch loop (measured inside the child, after its imports)."""
    result = _run_child("reference", pypi_url, str(names_file), str(concurrency))
    return float(result["seconds"])


def bench_throughput(projects: int, concurrencies: list[int], runs: int, work: Path) -> dict[str, Any]:
    """Median figures per concurrency for the real sync and for the bare reference loop."""
    from fakeindex import FakeIndex

    fake = FakeIndex()
    fake.start()
    try:
        names = [project.name for project in fake.add_many(projects)]
        for name in names:
            fake.files(name)  # build the wheels and sdists now, not during the first timed run
        names_file = work / "names.txt"
        names_file.write_text("\n".join(names))
        results: dict[str, Any] = {}
        for concurrency in concurrencies:
            syncs: list[SyncFigures] = []
            references: list[float] = []
            for run in range(runs):
                run_dir = work / f"sync-c{concurrency}-{run}"
                run_dir.mkdir()
                config = write_sync_config(run_dir, fake.pypi_url, fake.packages_url, concurrency)
                syncs.append(run_cli_sync(config))
                shutil.rmtree(run_dir)
                references.append(run_reference(fake.pypi_url, names_file, concurrency))
                if syncs[-1].fetched != projects:
                    raise RuntimeError(f"sync fetched {syncs[-1].fetched} of {projects} projects")
            results[str(concurrency)] = {
                "sync_wall_s": [round(s.wall_s, 2) for s in syncs],
                "sync_phase_s": [round(s.phase_s, 2) for s in syncs],
                "reference_s": [round(r, 2) for r in references],
                "sync_projects_per_s": projects / statistics.median(s.wall_s for s in syncs),
                "phase_projects_per_s": projects / statistics.median(s.phase_s for s in syncs),
                "reference_projects_per_s": projects / statistics.median(references),
            }
        return results
    finally:
        fake.stop()


# --------------------------------------------------------------------------------------------
# (b) diff and rebuild of the root pages for a PyPI-sized listing


@dataclass(frozen=True, slots=True)
class RootFixture:
    body: Path
    database: Path
    listed: int
    removed: tuple[str, ...]


def make_names(count: int, rng: random.Random) -> list[str]:
    """Distinct normalized names of 3-25 characters, half with a hyphen."""
    alphabet = string.ascii_lowercase + string.digits
    names: set[str] = set()
    while len(names) < count:
        length = rng.randint(3, 25)
        chars = rng.choices(alphabet, k=length)
        if rng.random() < 0.5:
            chars[rng.randint(1, length - 2)] = "-"
        names.add("".join(chars))
    return sorted(names)


def display_name(name: str, rng: random.Random) -> str:
    """About one display name in five differs from the normalized name."""
    roll = rng.random()
    if roll < 0.12:
        return name.capitalize()
    if roll < 0.20 and "-" in name:
        return name.replace("-", "_")
    return name


def make_root_fixture(count: int, directory: Path) -> RootFixture:
    """The upstream's root body (bytes on disk) and a serials DB that is ~1 % behind it."""
    from pypimirror.db import Database

    rng = random.Random(691)
    n_removed = int(count * REMOVED_SHARE)
    names = make_names(count + n_removed, rng)
    rng.shuffle(names)
    removed, listed_names = names[:n_removed], sorted(names[n_removed:])
    listed = [(display_name(name, rng), name, rng.randint(1, MAX_SERIAL)) for name in listed_names]

    last_serial = max(serial for _, _, serial in listed)
    entries = ",".join(f'{{"_last-serial":{serial},"name":{json.dumps(display)}}}' for display, _, serial in listed)
    body = directory / "root.json"
    meta = f'{{"_last-serial":{last_serial},"api-version":"1.1"}}'
    body.write_bytes(f'{{"meta":{meta},"projects":[{entries}]}}'.encode())

    database = directory / "serials.db"
    Database.open(f"sqlite:///{database}").dispose()  # the real schema
    rows: list[tuple[str, str, int]] = []
    for display, name, serial in listed:
        roll = rng.random()
        if roll < NEW_SHARE:
            continue
        rows.append((name, display, serial - 1 if roll < NEW_SHARE + CHANGED_SHARE else serial))
    rows += [(name, name, rng.randint(1, MAX_SERIAL)) for name in removed]
    with sqlite3.connect(database) as conn:
        conn.executemany("INSERT INTO serials (name, display_name, serial) VALUES (?, ?, ?)", rows)
    conn.close()
    return RootFixture(body, database, len(listed), tuple(removed))


class _Recorder:
    """Time and memory after each step; steps nest inside the phases of the run."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def add(self, kind: str, label: str, started: float) -> None:
        self.steps.append({
            "kind": kind,
            "step": label,
            "seconds": time.perf_counter() - started,
            "rss_mb": _vm_kib("VmRSS") / 1024,
            "hwm_mb": _vm_kib("VmHWM") / 1024,
        })

    def wrap(self, module: Any, attr: str, label: str) -> None:
        """Replace ``module.attr`` with a timed twin (callers look it up at call time)."""
        original = getattr(module, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add("step", label, started)

        setattr(module, attr, timed)

    async def phase(self, label: str, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            self.add("phase", label, started)


class _FileListingClient:
    """Answers the listing request with the body from a file, as the HTTP client hands it over."""

    def __init__(self, body_file: Path) -> None:
        self.body_file = body_file

    async def get(self, url: str, **_: Any) -> Any:
        from tornado.httputil import HTTPHeaders

        from pypimirror.upstream import UpstreamResponse

        headers = HTTPHeaders({"Content-Type": SIMPLE_JSON})
        return UpstreamResponse(url, 200, headers, self.body_file.read_bytes())


def root_child(config_file: str, body_file: str) -> None:
    """One run in a fresh process: the index sync's own code, minus the project fetches.

    ``_IndexSyncRun._plan`` reads the listing (through a client that returns the body from
    a file), loads the serials, scans the directories and plans; the projects it would fetch
    then get their listed serials stored (what a successful fetch ends with), ``_remove`` does
    the removals, and ``_write_root_pages`` rebuilds the root. The plan stays alive to the end,
    as in ``execute``. Module functions are wrapped to time each step.
    """
    from pypimirror import queries as dbq
    from pypimirror import listing as listing_module
    from pypimirror.configreader import load_config
    from pypimirror.db import Database
    from pypimirror.jobs import index_sync
    from pypimirror.jobs.sync_history import SyncHistory
    from pypimirror.storage import RepoLayout, atomic_write

    recorder = _Recorder()
    for module, attr, label in [
        (listing_module, "parse_simple_root_listing", "parse listing"),
        (index_sync, "_drop_invalid_names", "drop invalid names"),
        (dbq, "load_serials", "load serials"),
        (index_sync, "_project_dirs", "scan project dirs"),
        (index_sync, "plan_index_sync", "plan_index_sync"),
        (index_sync, "_make_plan", "plan + copy out (_make_plan)"),
        (index_sync, "_root_entries", "sort root entries"),
        (index_sync, "_write_root", "render + write + gzip root"),
    ]:
        recorder.wrap(module, attr, label)
    config = load_config(config_file)
    baseline = _vm_kib("VmRSS")

    async def run_phases(db: Database) -> dict[str, int]:
        client: Any = _FileListingClient(Path(body_file))
        run = index_sync._IndexSyncRun(
            sync=config.sync, upstream=config.upstream, repo_path=config.repo_path, prefix=config.prefix,
            db=db, client=client, stop=asyncio.Event(), clock=time.monotonic, sleep=asyncio.sleep,
            write=atomic_write, history=SyncHistory(
                db, RepoLayout(config.repo_path), enabled=False, founding=False, now=time.time
            ),
        )
        plan = await recorder.phase("plan (_plan)", run._plan())
        fetched = [(name, listed.display_name, listed.serial) for name, listed in plan.fetch]
        await recorder.phase("store fetched serials", db.run(lambda conn: dbq.store_serials(conn, fetched)))
        await recorder.phase("remove (_remove)", run._remove(plan.remove))
        await recorder.phase("root pages (_write_root_pages)", run._write_root_pages())
        return {"listed": run.report.listed, "planned": len(plan.fetch), "removed": run.report.removed}

    db = Database.open(config.database.url)
    try:
        counts = asyncio.run(run_phases(db))
    finally:
        db.dispose()
    print(json.dumps({
        "baseline_mb": baseline / 1024,
        "peak_mb": _vm_kib("VmHWM") / 1024,
        "steps": recorder.steps,
        **counts,
    }))


def _vm_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (VmHWM is the peak resident set)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def write_root_config(directory: Path, database: Path) -> Path:
    config = {
        "repo_path": str(directory / "repo"),
        "prefix": PREFIX,
        "database": {"url": f"sqlite:///{database}"},
        # Never contacted: the child's client answers the listing from a file.
        "upstream": {"pypi_url": "http://127.0.0.1:9", "packages_url": "http://127.0.0.1:9/packages"},
        "cache": {"size_limit": "1g"},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def check_root_pages(repo: Path, expected: int) -> dict[str, int]:
    """Sizes of the written root files; fails unless the JSON page lists ``expected`` projects."""
    simple = repo / "simple"
    sizes = {path.name: path.stat().st_size for path in sorted(simple.iterdir()) if path.is_file()}
    json_page = (simple / "index.v1_json").read_bytes()
    listed = json_page.count(b'"name":')
    if listed != expected:
        raise RuntimeError(f"root JSON lists {listed} projects, expected {expected}")
    if (simple / "index.html").read_bytes() != (simple / "index.v1_html").read_bytes():
        raise RuntimeError("index.html and index.v1_html differ")
    return sizes


def bench_root(count: int, runs: int, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    fixture = make_root_fixture(count, work)
    setup_s = time.perf_counter() - started
    measured: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}
    for run in range(runs):
        run_dir = work / f"root-{run}"
        run_dir.mkdir()
        database = run_dir / "pypi-mirror.db"
        shutil.copyfile(fixture.database, database)
        for name in fixture.removed:  # the pages of the projects about to be removed
            (run_dir / "repo" / "simple" / name).mkdir(parents=True)
        measured.append(_run_child("root", str(write_root_config(run_dir, database)), str(fixture.body)))
        sizes = check_root_pages(run_dir / "repo", fixture.listed)
        leftover = [name for name in fixture.removed if (run_dir / "repo" / "simple" / name).exists()]
        if leftover:
            raise RuntimeError(f"{len(leftover)} removed projects still have a directory")
        shutil.rmtree(run_dir)
    return {"setup_s": setup_s, "body_mb": fixture.body.stat().st_size / 1e6, "runs": measured, "files": sizes}


# --------------------------------------------------------------------------------------------
# (c) the index history: the sync's overhead, and its size per file


def bench_history_overhead(projects: int, runs: int, work: Path) -> dict[str, Any]:
    """Median ``sync --once`` figures, history on and off, each run on a fresh copy of one mirror."""
    from fakeindex import FakeIndex

    fake = FakeIndex()
    fake.start()
    try:
        names = [project.name for project in fake.add_many(projects, prefix="hist")]
        base = work / "history-base"
        base.mkdir()
        run_cli_sync(write_sync_config(base, fake.pypi_url, fake.packages_url, 4))  # starts the history
        for index, name in enumerate(names):
            fake.add_release(name, "2.0")
            if index % round(1 / YANKED_SHARE) == 0:
                fake.yank(name, "1.0", "bench")
            fake.files(name)  # build the new files now, not during a timed run
        figures: dict[bool, list[SyncFigures]] = {True: [], False: []}
        for run in range(runs):
            for record in (run % 2 == 0, run % 2 != 0):  # alternate which goes first
                run_dir = work / f"history-{record}-{run}"
                shutil.copytree(base, run_dir)
                config = write_sync_config(run_dir, fake.pypi_url, fake.packages_url, 4, record_history=record)
                result = run_cli_sync(config)
                if result.fetched != projects:
                    raise RuntimeError(f"sync fetched {result.fetched} of {projects} projects")
                if record:
                    _check_history_recorded(run_dir / "repo" / "pypi-mirror.db", projects)
                figures[record].append(result)
                shutil.rmtree(run_dir)
        return {
            label: {
                "wall_s": [round(f.wall_s, 2) for f in figures[record]],
                "phase_s": [round(f.phase_s, 2) for f in figures[record]],
            }
            for label, record in (("with", True), ("without", False))
        }
    finally:
        fake.stop()


def _check_history_recorded(database: Path, projects: int) -> None:
    """The run with the history on must have recorded every new file and every yank."""
    with sqlite3.connect(database) as conn:
        files = conn.execute("SELECT count(*) FROM history_files WHERE first_seen IS NOT NULL").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM history_events").fetchone()[0]
    conn.close()
    expected_events = 2 * len(range(0, projects, round(1 / YANKED_SHARE)))  # sdist and wheel of each yank
    if files != 2 * projects or events != expected_events:
        raise RuntimeError(f"history recorded {files} new files and {events} yanks, "
                           f"expected {2 * projects} and {expected_events}")


def bench_history_size(files: int, work: Path) -> dict[str, Any]:
    """Bytes per file of a history of ``files`` files (10 per project) in a real SQLite file."""
    from packaging.utils import NormalizedName

    from pypimirror.db import Database
    from pypimirror.historychanges import ProjectChanges, StateChange
    from pypimirror.historydb import record_changes
    from pypimirror.pagemodel import DistFile

    database = work / "history-size.db"
    db = Database.open(f"sqlite:///{database}")
    rng = random.Random(792)
    per_project = 10
    project_names = make_names(files // per_project, rng)

    def filenames(name: str) -> list[str]:
        stem = name.replace("-", "_")
        return [f"{stem}-{v}.{minor}-cp3{minor}-cp3{minor}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
                for v in range(per_project // 2) for minor in (11, 12)]

    def size() -> int:
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        return int(pages)

    def store(batch: list[ProjectChanges]) -> None:
        for start in range(0, len(batch), 500):
            with db.begin() as conn:
                record_changes(conn, batch[start : start + 500])

    try:
        empty = size()
        started = time.perf_counter()
        store([ProjectChanges(NormalizedName(name), name, 1.7e9 + i, created_at=1.7e9 + i, new_files=tuple(filenames(name)))
               for i, name in enumerate(project_names)])
        seen_s = time.perf_counter() - started
        first_seen = size()
        chosen = rng.sample(project_names, max(1, int(len(project_names) * HISTORY_REMOVED_SHARE)))
        removed = [
            ProjectChanges(NormalizedName(name), name, 1.8e9, gone_files=tuple(
                DistFile(f, f"{PREFIX}/packages/ab/cd/{rng.getrandbits(240):060x}/{f}", f"{rng.getrandbits(256):064x}",
                         ">=3.11", 12_345_678, "2024-05-01T12:00:00.123456Z", False, f"{rng.getrandbits(256):064x}",
                         None, "1.0")
                for f in filenames(name)))
            for name in chosen
        ]
        store(removed)
        after_removals = size()
        yanked = rng.sample(project_names, max(1, int(len(project_names) * HISTORY_YANKED_SHARE)))
        store([ProjectChanges(NormalizedName(name), name, 1.9e9, changes=tuple(
            StateChange(f, (None, None), ("yanked", "a security problem")) for f in filenames(name)))
            for name in yanked])
        after_yanks = size()
    finally:
        db.dispose()
    n_removed = len(chosen) * per_project
    n_yanked = len(yanked) * per_project
    return {
        "files": len(project_names) * per_project,
        "store_s": round(seen_s, 1),
        "bytes_per_file": (first_seen - empty) / (len(project_names) * per_project),
        "bytes_per_removed_file": (after_removals - first_seen) / n_removed,
        "bytes_per_yank": (after_yanks - after_removals) / n_yanked,
        "total_mb": after_yanks / 1e6,
    }


def report_history(overhead: dict[str, Any] | None, size: dict[str, Any] | None, projects: int) -> bool:
    ok = True
    if overhead is not None:
        print(f"\n(c) index history: sync --once of {projects} changed projects (a new release each, "
              f"{YANKED_SHARE:.0%} also a yank), concurrency 4, fresh copy per run")
        medians = {label: statistics.median(row["wall_s"]) for label, row in overhead.items()}
        phases = {label: statistics.median(row["phase_s"]) for label, row in overhead.items()}
        for label, row in overhead.items():
            print(f"    {label + ' history':<16} whole process {medians[label]:.2f} s ({projects / medians[label]:.0f} proj/s), "
                  f"after plan {phases[label]:.2f} s; runs {row['wall_s']} s")
        cost = medians["with"] / medians["without"] - 1
        phase_cost = phases["with"] / phases["without"] - 1
        ok = cost <= TARGET_HISTORY_OVERHEAD
        print(f"    overhead: {cost:+.1%} whole process, {phase_cost:+.1%} after plan "
              f"(target <= {TARGET_HISTORY_OVERHEAD:.0%}): {_verdict(ok)}")
    if size is not None:
        print(f"    history size (SQLite, {size['files']:,} files, stored in {size['store_s']} s): "
              f"{size['bytes_per_file']:.1f} bytes per file first seen "
              f"({size['bytes_per_file']:.1f} MB per million files); "
              f"{size['bytes_per_removed_file']:.0f} bytes per removed file (its entry kept), "
              f"{size['bytes_per_yank']:.0f} bytes per yank")
    return ok


# --------------------------------------------------------------------------------------------
# the driver


def _run_child(kind: str, *args: str) -> dict[str, Any]:
    """Run ``kind`` in a new interpreter; its last stdout line is its JSON result."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {kind} exited {result.returncode}:\n{result.stderr[-3000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_throughput(results: dict[str, Any], projects: int) -> bool:
    print(f"(a) sync --once (subprocess) of {projects} projects from the fake upstream, loopback")
    print("    concurrency  sync proj/s (whole process)  after-plan proj/s  bare GET loop proj/s  sync/bare")
    ok = True
    for concurrency, row in results.items():
        rate = row["sync_projects_per_s"]
        ok = ok and rate >= TARGET_PROJECTS_PER_S
        print(f"    {concurrency:>11}  {rate:>27.0f}  {row['phase_projects_per_s']:>17.0f}  "
              f"{row['reference_projects_per_s']:>20.0f}  {rate / row['reference_projects_per_s']:>9.0%}")
        print(f"    {'':>11}  runs: sync {row['sync_wall_s']} s, after plan {row['sync_phase_s']} s, "
              f"bare {row['reference_s']} s")
    note = "" if projects == DEFAULT_PROJECTS else f" (the target is set for {DEFAULT_PROJECTS} projects)"
    print(f"    target >= {TARGET_PROJECTS_PER_S:.0f} projects/s at every concurrency: {_verdict(ok)}{note}")
    return ok


def report_root(results: dict[str, Any], count: int) -> bool:
    runs = results["runs"]
    totals = [sum(s["seconds"] for s in run["steps"] if s["kind"] == "phase") for run in runs]
    total: float = statistics.median(totals)
    peak: float = statistics.median(run["peak_mb"] for run in runs)
    first = runs[0]
    print(f"\n(b) diff + root rebuild, {count} listed projects (fresh process per run, "
          f"median of {len(runs)})")
    print(f"    fixture: listing body {results['body_mb']:.1f} MB (built in {results['setup_s']:.1f} s); "
          f"listed {first['listed']}, fetch planned {first['planned']}, removed {first['removed']}")
    print(f"    {'phase / step':<34} {'seconds':>8} {'RSS MB':>7} {'peak MB':>8}")
    for index, row in enumerate(first["steps"]):
        column = [run["steps"][index] for run in runs]
        label = row["step"] if row["kind"] == "phase" else f"  . {row['step']}"
        print(f"    {label:<34} {statistics.median(s['seconds'] for s in column):>8.2f} "
              f"{statistics.median(s['rss_mb'] for s in column):>7.0f} "
              f"{statistics.median(s['hwm_mb'] for s in column):>8.0f}")
    print(f"    RSS after imports and config: {statistics.median(run['baseline_mb'] for run in runs):.0f} MB")
    print("    files: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in results["files"].items()))
    time_ok = total < TARGET_ROOT_SECONDS
    rss_ok = peak < TARGET_ROOT_RSS_MB
    if count != DEFAULT_LISTING:
        print(f"    (the targets are set for {DEFAULT_LISTING} projects)")
    print(f"    total {total:.1f} s (target < {TARGET_ROOT_SECONDS:.0f} s): {_verdict(time_ok)}; "
          f"peak RSS {peak:.0f} MB (target < {TARGET_ROOT_RSS_MB:.0f} MB): {_verdict(rss_ok)}")
    print(f"    runs: total {[round(t, 1) for t in totals]} s, peak {[round(r['peak_mb']) for r in runs]} MB")
    return time_ok and rss_ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=DEFAULT_PROJECTS, help="projects synced in (a) (default 2000)")
    parser.add_argument("--listing", type=int, default=DEFAULT_LISTING, help="listing size in (b) (default 800000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16],
                        help="sync.concurrent_downloads values for (a) (default: 4, the default, and 16)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; medians are shown (default 3)")
    parser.add_argument("--history-files", type=int, default=DEFAULT_HISTORY_FILES,
                        help="files in the history size figure of (c) (default 1000000)")
    parser.add_argument("--only", choices=("a", "b", "c"), help="run only one part")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child == "reference":
        reference_child(args.child_args[0], args.child_args[1], int(args.child_args[2]))
        return 0
    if args.child == "root":
        root_child(args.child_args[0], args.child_args[1])
        return 0
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    figures: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-index-sync-") as scratch:
        work = Path(scratch)
        if args.only in (None, "a"):
            figures["throughput"] = bench_throughput(args.projects, args.concurrency, args.runs, work)
            ok = report_throughput(figures["throughput"], args.projects) and ok
        if args.only in (None, "b"):
            figures["root"] = bench_root(args.listing, args.runs, work)
            ok = report_root(figures["root"], args.listing) and ok
        if args.only in (None, "c"):
            figures["history_overhead"] = bench_history_overhead(args.projects, args.runs, work)
            figures["history_size"] = bench_history_size(args.history_files, work)
            ok = report_history(figures["history_overhead"], figures["history_size"], args.projects) and ok
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
