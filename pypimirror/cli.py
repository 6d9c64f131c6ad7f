"""The ``pypimirror`` command line: the composition root for one-shot commands.

Expected failures (bad configuration, unreachable database or upstream, a refused sync)
are :class:`~pypimirror.errors.PyPIMirrorError`\\ s: they print one line
``pypimirror: error: …`` and exit 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import yaml

from pypimirror import __version__
from pypimirror.app import serve_forever
from pypimirror.config import Config, load_config
from pypimirror.db import Database
from pypimirror.errors import PyPIMirrorError, StorageError
from pypimirror.jobs.cache import format_plan, run_cache
from pypimirror.jobs.index_sync import run_index_sync
from pypimirror.jobs.runner import run_job
from pypimirror.upstream import UpstreamClient, UpstreamSettings, configure_curl_client

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2

DEFAULT_CONFIG = "config.yaml"


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
        command.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help=f"configuration file (default: $PYPIMIRROR_CONFIG, then {DEFAULT_CONFIG})",
        )
        return command

    add_command("check-config", "validate the configuration and print the effective settings")
    add_command("serve", "run the HTTP server until SIGINT or SIGTERM")
    sync = add_command("sync", "sync the index from the upstream")
    sync.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="run the index sync, then cache management, once and exit "
        "(0 ok, 1 interrupted or a step refused, 2 error)",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="print what cache management would do and change nothing (no index sync)",
    )
    return parser


def _check_config(config: Config) -> int:
    """Print the effective configuration, secrets masked, as YAML."""
    sys.stdout.write(yaml.safe_dump(config.to_display_dict(), sort_keys=False))
    return EXIT_OK


def upstream_client(config: Config) -> UpstreamClient:
    """The outbound client every job uses; call after :func:`configure_curl_client`."""
    timeout = config.timeouts.upstream.total_seconds()
    return UpstreamClient(
        UpstreamSettings(
            user_agent=config.sync.user_agent,
            proxy=config.upstream.proxy,
            connect_timeout=timeout,
            stall_timeout=timeout,
            attempts=config.sync.retry,
        )
    )


def _prepare_repo(config: Config) -> None:
    try:
        config.repo_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create repo_path {str(config.repo_path)!r}: {exc.strerror}") from exc


async def _sync_once(config: Config, *, dry_run: bool) -> int:
    """Index sync then cache management, each under the lease; or, dry, just the cache plan.

    SIGINT/SIGTERM stop the run at the next safe point. As in the seed, cache management does
    not run after an index sync that failed or was interrupted.
    """
    _prepare_repo(config)
    configure_curl_client(max_clients=config.sync.concurrent_downloads * 2)
    db = await asyncio.to_thread(Database.open, config.database.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    client = upstream_client(config)
    try:
        if dry_run:
            report = await run_cache(config, db, client, stop=stop, dry_run=True)
            if report.plan is None:  # stopped before the plan was made
                return EXIT_FAILED
            sys.stdout.write(format_plan(report.plan) + "\n")
            return EXIT_OK
        synced = await run_job(
            db,
            job="index_sync",
            node_id=config.node_id,
            body=lambda: run_index_sync(config, db, client, stop=stop),
            stop=stop,
        )
        if not synced.ok and synced.interrupted:
            return EXIT_FAILED
        cached = await run_job(
            db,
            job="cache",
            node_id=config.node_id,
            body=lambda: run_cache(config, db, client, stop=stop),
            stop=stop,
        )
    finally:
        await asyncio.to_thread(db.dispose)
    return EXIT_OK if synced.ok and cached.ok else EXIT_FAILED


def _request_stop(stop: asyncio.Event, signum: int) -> None:
    logger.warning("received %s; stopping at the next safe point", signal.Signals(signum).name)
    stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(_config_path(args.config))
        if args.command == "check-config":
            return _check_config(config)
        if args.command == "serve":
            return serve_forever(config)
        if args.command == "sync":
            return asyncio.run(_sync_once(config, dry_run=args.dry_run))
        raise AssertionError(f"unhandled command {args.command!r}")
    except PyPIMirrorError as exc:
        print(f"pypimirror: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_FAILED
