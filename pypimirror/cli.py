"""The ``pypimirror`` command line: the composition root for every command.

Expected failures (bad configuration, unreachable database or upstream, a refused sync)
are :class:`~pypimirror.errors.PyPIMirrorError`\\ s: they print one line
``pypimirror: error: …`` and exit 2; a sync that finds another runner holding the lease exits 3
instead, so cron and systemd can tell "busy" from "broken". Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = ["format_status", "main"]

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import yaml
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from pypimirror import __version__, pinqueries
from pypimirror import queries as dbq
from pypimirror.app import upstream_client
from pypimirror.config import AdvisoriesConfig, Config
from pypimirror.configreader import load_config
from pypimirror.db import Database
from pypimirror.errors import DatabaseError, JobLockedError, PinnedSetError, PyPIMirrorError, StorageError
from pypimirror.healthcheck import check_health
from pypimirror.hitchart import format_rate
from pypimirror.hitrate import HitWindow
from pypimirror.jobs.cache import format_plan, run_cache
from pypimirror.byteunits import format_bytes
from pypimirror.jobs.pin_command import add_pinned_set, format_pinned_set, format_pinned_sets, remove_pinned_set
from pypimirror.jobs.registry import CACHE, JOBS
from pypimirror.jobs.scheduler import SyncJobs, scheduling
from pypimirror.jobs.simulate import POLICIES
from pypimirror.jobs.simulate_command import (
    SimulateArgumentError,
    parse_budgets,
    parse_policies,
    run_simulation,
    write_synthetic_log,
)
from pypimirror.lifecycle import StopSignals, serve_forever
from pypimirror.queries import JobRun, Lease
from pypimirror.schema import advisories, hit_counters, history_state, pinned_sets
from pypimirror.status import ADVISORY_JOB, MirrorStatus, read_status
from pypimirror.trace import LOG_FORMATS
from pypimirror.upstream import configure_curl_client

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_LOCKED = 3

DEFAULT_CONFIG = "config.yaml"

# How often ``sync --once --wait`` looks whether the lease is free again.
_LEASE_POLL_S = 2.0


def _config_path(given: str | None) -> str:
    """``-c`` wins, then ``$PYPIMIRROR_CONFIG``, then ``config.yaml`` in the working directory."""
    return given or os.environ.get("PYPIMIRROR_CONFIG") or DEFAULT_CONFIG


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypimirror",
        description="A partial PyPI mirror: the whole index, the popular files.",
    )
    parser.add_argument("--version", action="version", version=f"pypimirror {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        _add_config_option(command)
        return command

    add_command("check-config", "validate the configuration and print the effective settings")
    serve = add_command("serve", "run the HTTP server until SIGINT or SIGTERM")
    serve.add_argument(
        "--with-scheduler",
        action="store_true",
        help="also run the index sync and cache management on their schedules (schedule.*)",
    )
    sync = add_command(
        "sync",
        "run the index sync and cache management on their schedules, without the HTTP server "
        "(with --once: run them once and exit)",
    )
    sync.add_argument(
        "--once",
        action="store_true",
        help="run the index sync, then cache management, once and exit "
        "(0 ok, 1 interrupted or a step refused, 2 error or a failed index sync, 3 another sync holds the lease)",
    )
    sync.add_argument(
        "--wait",
        action="store_true",
        help="with --once: when another sync holds the lease, wait for it instead of exiting 3",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="with --once: print what cache management would do and change nothing (no index sync)",
    )
    add_command("status", "show the last job runs, the cache fill per tier, the hit rate and the sync lease holder")
    add_command("healthcheck", "ask the running server's /healthz; exit 0 when it answers ok, else 1 (containers)")
    _add_simulate_arguments(
        add_command("simulate", "replay access logs against cache policies at several budgets, or write a synthetic log")
    )
    _add_pin_commands(commands.add_parser(
        "pin", help="keep the files of lockfiles in the cache whatever the votes say (pinned sets)",
        description="keep the files of lockfiles in the cache whatever the votes say (pinned sets)",
    ))
    return parser


def _add_config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"configuration file (default: $PYPIMIRROR_CONFIG, then {DEFAULT_CONFIG})",
    )


def _add_pin_commands(pin: argparse.ArgumentParser) -> None:
    actions = pin.add_subparsers(dest="pin_command", required=True, metavar="ACTION")

    def add_action(name: str, help_text: str) -> argparse.ArgumentParser:
        action = actions.add_parser(name, help=help_text, description=help_text)
        _add_config_option(action)
        return action

    add = add_action("add", "pin the files of lockfiles (uv.lock, pylock.toml, poetry.lock, requirements.txt) "
                            "as the set NAME, replacing a set of that name")
    add.add_argument("name", metavar="NAME", help="the set's name")
    add.add_argument("files", metavar="FILE", nargs="+", type=Path, help="lockfiles whose files the set holds")
    add.add_argument("--platform", action="extend", nargs="+", default=[], metavar="TAG",
                     help="narrow name==version pins without hashes to wheels for these platform tags "
                          "(e.g. manylinux_2_28_x86_64 win_amd64)")
    add.add_argument("--python", action="extend", nargs="+", default=[], metavar="X.Y",
                     help="narrow name==version pins and markers to these Python versions (e.g. 3.12)")
    add.add_argument("--now", action="store_true",
                     help="run cache management at once to fetch the set's files (else the next cache run does)")
    add_action("list", "list the pinned sets: files, bytes, how many are local")
    show = add_action("show", "show one pinned set: where it came from and each of its files")
    show.add_argument("name", metavar="NAME")
    remove = add_action("remove", "remove a pinned set; its files become ordinary cache candidates")
    remove.add_argument("name", metavar="NAME")


def _add_simulate_arguments(simulate: argparse.ArgumentParser) -> None:
    replay = simulate.add_argument_group("replay")
    replay.add_argument("--log", action="append", type=Path, default=[], metavar="FILE",
                        help="access log, plain or gzipped, in time order (repeat for several)")
    replay.add_argument("--log-format", choices=LOG_FORMATS, default="auto", help="(default: auto)")
    replay.add_argument("--path-prefix", metavar="P", help="URL prefix of the logged mirror (default: prefix)")
    replay.add_argument("--budgets", metavar="SIZES", help="comma-separated cache sizes, e.g. 500m,2g,10g")
    replay.add_argument("--policies", default=",".join(POLICIES), metavar="NAMES",
                        help=f"comma-separated, of {', '.join(POLICIES)} (default: all)")
    replay.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    replay.add_argument("--plot", type=Path, metavar="OUT", help="also plot hit rate by budget (.svg, or .png with matplotlib)")
    synthetic = simulate.add_argument_group("synthetic log")
    synthetic.add_argument("--synthetic", type=int, metavar="DAYS", help="write a synthetic log of DAYS days instead")
    synthetic.add_argument("--requests", type=int, metavar="N", help="downloads in the synthetic log")
    synthetic.add_argument("--popularity", type=Path, metavar="CSV", help="downloads per project (project,download_count)")
    synthetic.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    synthetic.add_argument("--write-log", type=Path, metavar="OUT", help="where the synthetic log goes")


def _simulate(config: Config, args: argparse.Namespace) -> int:
    """``simulate``: a synthetic log with ``--synthetic``, else a replay of ``--log`` files."""
    if args.synthetic is not None:
        missing = [flag for flag, value in (("--requests", args.requests), ("--popularity", args.popularity),
                                            ("--write-log", args.write_log)) if value is None]
        if missing or args.log:
            raise SimulateArgumentError(
                "--synthetic needs " + ", ".join(missing) if missing else "--synthetic writes a log; it takes no --log"
            )
        write_synthetic_log(config, days=args.synthetic, requests=args.requests, popularity=args.popularity,
                            seed=args.seed, out=args.write_log, stdout=sys.stdout)
        return EXIT_OK
    if not args.log or args.budgets is None:
        raise SimulateArgumentError("simulate needs --log FILE and --budgets (or --synthetic DAYS to write a log)")
    run_simulation(
        config, logs=args.log, log_format=args.log_format, path_prefix=args.path_prefix,
        budgets=parse_budgets(args.budgets), policies=parse_policies(args.policies),
        json_out=args.json, plot_out=args.plot, stdout=sys.stdout,
    )
    return EXIT_OK


def _check_config(config: Config) -> int:
    """Print the effective configuration, secrets masked, as YAML."""
    sys.stdout.write(yaml.safe_dump(config.to_display_dict(), sort_keys=False))
    return EXIT_OK


def _healthcheck(config: Config) -> int:
    """One line saying what /healthz answered (a container runtime keeps it), and 0 if healthy."""
    healthy, said = check_health(config)
    print(said, file=sys.stdout if healthy else sys.stderr)
    return EXIT_OK if healthy else EXIT_FAILED


def _prepare_repo(config: Config) -> None:
    try:
        config.repo_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create repo_path {str(config.repo_path)!r}: {exc.strerror}") from exc


async def _open_for_jobs(config: Config) -> Database:
    """The repo directory, the outbound client's configuration and the database, for a sync."""
    _prepare_repo(config)
    configure_curl_client(max_clients=config.sync.concurrent_downloads * 2)
    return await asyncio.to_thread(Database.open, config.database.url)


def _stop_signals() -> StopSignals:
    """SIGINT/SIGTERM stop a sync at its next safe point; a second one stops waiting for that."""
    signals = StopSignals(stopping="stopping at the next safe point", forcing="not waiting any longer")
    signals.install(asyncio.get_running_loop())
    return signals


async def _sync_once(config: Config, *, dry_run: bool, wait: bool) -> int:
    """One pass: every job of the table in order, each under the lease; or, dry, just the cache plan.

    SIGINT/SIGTERM stop the run at the next safe point (or the wait for the lease). No job runs
    after one that was interrupted (exit 1) or reported a failure that blocks the pass, such as
    an index sync whose pages could not be written or too many of whose projects failed: that
    exits 2, like any other error. A pass whose every job ran but not all ok exits 1.
    """
    db = await _open_for_jobs(config)
    signals = _stop_signals()
    stop = signals.stop
    jobs = SyncJobs(config, db, upstream_client(config, attempts=config.sync.retry))
    try:
        if dry_run:
            report = await run_cache(config, db, jobs.client, stop=stop, dry_run=True)
            if report.plan is None:  # stopped before the plan was made
                return EXIT_FAILED
            sys.stdout.write(format_plan(report.plan) + "\n")
            return EXIT_OK
        all_ok = True
        for spec in JOBS:
            ran = await _when_lease_free(partial(jobs.run, spec.name, stop), wait=wait, stop=stop)
            if ran is None or ran.interrupted:
                return EXIT_FAILED
            failure = spec.blocking_failure(ran)
            if failure is not None:
                print(f"pypimirror: error: {spec.title.lower()} failed: {failure}", file=sys.stderr)
                return EXIT_ERROR
            all_ok = all_ok and ran.ok
    finally:
        await asyncio.to_thread(db.dispose)
    return EXIT_OK if all_ok else EXIT_FAILED


async def _when_lease_free(
    attempt: Callable[[], Awaitable[T]], *, wait: bool, stop: asyncio.Event, poll: float = _LEASE_POLL_S
) -> T | None:
    """``attempt()``; while another runner holds the lease, raise or (``wait``) try again.

    Returns None when ``stop`` is set while waiting.
    """
    announced = False
    while True:
        try:
            return await attempt()
        except JobLockedError as exc:
            if not wait:
                raise
            if not announced:
                logger.info("%s; waiting for it to be released", exc)
                announced = True
        try:
            await asyncio.wait_for(stop.wait(), poll)
        except TimeoutError:
            continue
        return None


async def _sync_scheduled(config: Config) -> int:
    """The embedded scheduler in the foreground, without the HTTP server, until SIGINT/SIGTERM."""
    db = await _open_for_jobs(config)
    signals = _stop_signals()
    try:
        jobs = SyncJobs(config, db, upstream_client(config, attempts=config.sync.retry))
        async with scheduling(
            jobs, config.schedule, stop=signals.stop, grace=config.shutdown_grace, forced=signals.forced
        ):
            logger.info("sync scheduler running (pid %d); SIGINT or SIGTERM stops it", os.getpid())
            await signals.stop.wait()
    finally:
        await asyncio.to_thread(db.dispose)
    logger.info("stopped")
    return EXIT_OK


# --------------------------------------------------------------------------- pin


def _pin(config: Config, args: argparse.Namespace) -> int:
    """``pin add|list|show|remove``: the pinned sets, stored in the database."""
    if args.pin_command == "add":
        return _pin_add(config, args)
    db = _open_existing_database(config.database.url)
    try:
        db.create_schema()  # an older database gets the pinned sets' tables, and nothing else changes
        if args.pin_command == "remove":
            remove_pinned_set(db, args.name)
            print(f"pinned set {args.name!r} removed; its files are ordinary cache candidates again")
            return EXIT_OK
        with db.connect() as conn:
            if args.pin_command == "list":
                sys.stdout.write(format_pinned_sets(pinqueries.pinned_set_summaries(conn, config.node_id)))
                return EXIT_OK
            pinned = pinqueries.load_pinned_set(conn, args.name, config.node_id)
    finally:
        db.dispose()
    if pinned is None:
        raise PinnedSetError(f"no pinned set named {args.name!r}")
    sys.stdout.write(format_pinned_set(pinned))
    return EXIT_OK


def _pin_add(config: Config, args: argparse.Namespace) -> int:
    """Store the set; 0 when every entry was pinned, 1 when some were not (each reported), 2 when none was."""
    _prepare_repo(config)  # the default database lives there, even before the first sync
    db = Database.open(config.database.url)
    try:
        result = add_pinned_set(config, db, args.name, args.files, platforms=args.platform, pythons=args.python,
                                now=time.time())
    finally:
        db.dispose()
    for note in result.notes:
        print(f"note: {note}")
    for skipped in result.skipped:
        print(f"skipped: {skipped}")
    for unpinned in result.unpinned:
        print(f"pypimirror: error: {unpinned}", file=sys.stderr)
    if not result.files:
        print(f"pypimirror: error: pinned set {args.name!r}: no entry of {', '.join(map(str, args.files))} is on "
              "the stored pages; nothing was pinned", file=sys.stderr)
        return EXIT_ERROR
    left_out = f"; {len(result.unpinned)} entries not pinned (above)" if result.unpinned else ""
    print(f"pinned set {args.name!r} {'replaced' if result.replaced else 'stored'}: {result.files} files, "
          f"{format_bytes(result.bytes)}{left_out}")
    status = asyncio.run(_fill_pinned_set(config, args.name)) if args.now else EXIT_OK
    return EXIT_FAILED if result.unpinned else status


async def _fill_pinned_set(config: Config, name: str) -> int:
    """``pin add --now``: one cache run under the lease (every download verified), then how much of the set is local."""
    db = await _open_for_jobs(config)
    signals = _stop_signals()
    try:
        jobs = SyncJobs(config, db, upstream_client(config, attempts=config.sync.retry))
        report = await jobs.run(CACHE.name, signals.stop)
        pinned = await db.run_read(lambda conn: pinqueries.load_pinned_set(conn, name, config.node_id))
    finally:
        await asyncio.to_thread(db.dispose)
    if pinned is None:
        raise PinnedSetError(f"pinned set {name!r} was removed while the cache ran")
    local, total = len(pinned.local), len(pinned.files)
    if local == total:
        print(f"pinned set {name!r}: all {total} files local")
        return EXIT_OK
    why = report.failure_reason or ("interrupted" if report.interrupted else "see the cache run's log")
    print(f"pypimirror: error: pinned set {name!r}: {local} of {total} files local after the cache run: {why}",
          file=sys.stderr)
    return EXIT_FAILED


# --------------------------------------------------------------------------- status


def _status(config: Config) -> int:
    """Print the job history, the cache fill of this node and the lease, read from the database."""
    db = _open_existing_database(config.database.url)
    try:
        with db.connect() as conn:
            # A database of an older release (status never upgrades it) has no hit counters yet.
            with_hits = inspect(conn).has_table(hit_counters.name)
            with_pins = inspect(conn).has_table(pinned_sets.name)
            with_advisories = inspect(conn).has_table(advisories.name)
            with_history = inspect(conn).has_table(history_state.name)
            status = read_status(
                conn, config.node_id, config.cache.tier_limits, job_titles=JOBS.titles(), with_hits=with_hits,
                with_pins=with_pins, with_advisories=with_advisories, with_history=with_history,
            )
            lease = dbq.read_lease(conn, dbq.SYNC_LEASE)
    finally:
        db.dispose()
    text = format_status(status, lease, config.cache.tier_roots, node_id=config.node_id, now=time.time())
    sys.stdout.write(text + format_advisory_status(status, config.advisories, now=time.time()))
    return EXIT_OK


def _open_existing_database(url: str) -> Database:
    """The database without creating it: a status must not leave an empty SQLite file behind."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.exists():
            raise DatabaseError(
                f"cannot open database {str(path)!r}: no such file "
                "(nothing has run yet: start `pypimirror serve --with-scheduler` or run `pypimirror sync --once`)"
            )
    return Database(url)


def format_status(
    status: MirrorStatus, lease: Lease | None, tier_paths: Sequence[Path], *, node_id: str, now: float
) -> str:
    """The status as an operator reads it: one block per job, one line per tier, the hit rate, the lease.

    A job of the table that never ran is one line saying so.
    """
    lines = ["jobs:"]
    if not status.jobs and not status.job_titles:
        lines.append("  none has run yet")
    lines.extend(f"  {name}: never ran" for name in status.job_titles if status.job(name) is None)
    for job in status.jobs:
        lines.append(f"  {job.name}:")
        lines.append(f"    last run:      {_describe_run(job.last_run, now)}")
        if job.last_finished is not None and job.last_finished is not job.last_run:
            lines.append(f"    last finished: {_describe_run(job.last_finished, now)}")
        success = _when(job.last_success.started_at, now) if job.last_success is not None else "never"
        lines.append(f"    last success:  {success}; failed or interrupted since: {job.failures_since_success}")
        counts = job.last_finished.counts if job.last_finished is not None else {}
        if counts:
            lines.append("    counts:        " + _format_counts(counts))
    lines.append(f"cache fill (node {node_id}):")
    for tier, path in zip(status.tiers, tier_paths, strict=True):
        share = f"{100 * tier.bytes / tier.limit:.1f} %" if tier.limit else "-"
        lines.append(
            f"  tier {tier.index} {path}: {format_bytes(tier.bytes)} of {format_bytes(tier.limit)} "
            f"({share}), {tier.files} files"
        )
    if status.hits is not None:
        lines.append(f"hit rate (node {node_id}; downloads served from the cache, of all it answered):")
        for title, window in (("last 24 h", status.hits.last_day), ("last 7 d ", status.hits.last_week)):
            lines.append(f"  {title}: {_describe_hits(window)}")
    else:
        lines.append("hit rate: not recorded in this database yet (the next serve or sync upgrades its schema)")
    lines.append(f"pinned sets (node {node_id}):")
    lines.append(format_pinned_sets(status.pinned, indent="  ").rstrip("\n"))
    lines.append("index history: " + _describe_history(status.history_since, now))
    lines.append("sync lease: " + _describe_lease(lease, now))
    return "\n".join(lines) + "\n"


def format_advisory_status(status: MirrorStatus, settings: AdvisoriesConfig, *, now: float) -> str:
    """The advisory lines of ``status``: what is stored, the policy, the last sync, and the files it reaches."""
    if status.advisories is None:
        return "advisories: not recorded in this database yet (the next serve or sync upgrades its schema)\n"
    counts = status.advisories
    lines = [
        f"advisories: {counts.total} stored ({counts.withdrawn} withdrawn, {counts.malicious} malicious packages); "
        f"mode {settings.mode}{' (audit: nothing changed)' if settings.audit else ''}"
    ]
    if settings.source is None:
        lines.append("  no advisories.source configured: the advisory sync does nothing")
        return "\n".join(lines) + "\n"
    job = status.job(ADVISORY_JOB)
    success = job.last_success if job is not None else None
    lines.append("  last successful sync: " + ("never" if success is None else _when(success.started_at, now)))
    files = status.advisory_files()
    if files is not None:
        lines.append(f"  files at the last sync: {files[0]} flagged, {files[1]} blocked")
    return "\n".join(lines) + "\n"


def _describe_hits(window: HitWindow) -> str:
    if not window.requests:
        return "no downloads"
    return (
        f"requests {format_rate(window.request_rate)} of {window.requests}, "
        f"bytes {format_rate(window.byte_rate)} of {format_bytes(window.bytes)}"
    )


def _describe_run(run: JobRun, now: float) -> str:
    started = _when(run.started_at, now)
    if run.finished_at is None:
        return f"started {started} on {run.node_id}, still running (or its process died)"
    text = f"{run.outcome} in {_duration(run.finished_at - run.started_at)}, started {started} on {run.node_id}"
    return text + (f"; error: {run.error}" if run.error else "")


def _format_counts(counts: Mapping[str, object]) -> str:
    """The counts worth reading: non-zero ones, without the per-phase timings and tier sizes shown elsewhere."""
    shown = [f"{key}={value}" for key, value in counts.items() if value and not key.startswith(("phase_", "tier"))]
    return " ".join(shown) or "all zero"


def _describe_history(since: float | None, now: float) -> str:
    if since is None:
        return "not complete yet (it starts when an index sync with sync.record_history completes)"
    return f"complete since {_when(since, now)}"


def _describe_lease(lease: Lease | None, now: float) -> str:
    if lease is None:
        return "free"
    if lease.expires_at <= now:
        return f"free (the lease of {lease.holder} expired {_duration(now - lease.expires_at)} ago)"
    return (
        f"held by {lease.holder} since {_when(lease.acquired_at, now)}, "
        f"expires in {_duration(lease.expires_at - now)} unless renewed"
    )


def _when(moment: float, now: float) -> str:
    stamp = datetime.fromtimestamp(moment).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{stamp} ({_duration(now - moment)} ago)"


def _duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``4.2s``: short, and exact enough for a human."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "sync" and not args.once and (args.wait or args.dry_run):
        parser.error("--wait and --dry-run need --once")
    # ``pin`` prints what it did; its log would only repeat it (``-v`` shows it all).
    quiet = args.command == "pin"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(_config_path(args.config))
        if args.command == "check-config":
            return _check_config(config)
        if args.command == "serve":
            _prepare_repo(config)
            return serve_forever(config, with_scheduler=args.with_scheduler)
        if args.command == "sync" and args.once:
            return asyncio.run(_sync_once(config, dry_run=args.dry_run, wait=args.wait))
        if args.command == "sync":
            return asyncio.run(_sync_scheduled(config))
        if args.command == "status":
            return _status(config)
        if args.command == "healthcheck":
            return _healthcheck(config)
        if args.command == "simulate":
            return _simulate(config, args)
        if args.command == "pin":
            return _pin(config, args)
        raise AssertionError(f"unhandled command {args.command!r}")
    except JobLockedError as exc:
        print(f"pypimirror: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except PyPIMirrorError as exc:
        print(f"pypimirror: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_FAILED
