"""``pypimirror simulate``: replay access logs (or write a synthetic one) for a configuration.

The command reads the stored pages of the configuration's repository for file sizes, packs the
logs into a trace, replays it (:mod:`~pypimirror.jobs.simulate`) and prints the table, and on
request writes the JSON document and the plot. With ``--synthetic`` it writes a trace instead
(:func:`~pypimirror.synthtrace.write_synthetic_trace`). Bad arguments raise
:class:`SimulateArgumentError`, which the command line prints as one line (exit 2).
"""

from __future__ import annotations

__all__ = [
    "SimulateArgumentError",
    "parse_budgets",
    "parse_policies",
    "run_simulation",
    "write_synthetic_log",
]

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pypimirror.jobs.simulate import POLICIES, compact_trace, release_listing, simulate
from pypimirror.jobs.simulate_report import format_table, results_document, write_plot

from pypimirror.config import Config
from pypimirror.configvalues import parse_size
from pypimirror.errors import PyPIMirrorError, StorageError
from pypimirror.pagescan import scan_listed_files
from pypimirror.popularity import read_popularity_csv
from pypimirror.synthtrace import SyntheticModel, write_synthetic_trace
from pypimirror.trace import TraceReader

logger = logging.getLogger(__name__)


class SimulateArgumentError(PyPIMirrorError):
    """An argument of ``pypimirror simulate`` cannot be used (a budget, a policy, a file)."""


def parse_budgets(text: str) -> list[int]:
    """Comma-separated sizes (``500m,2g,10g``) in bytes, in the given order, each above zero."""
    budgets: list[int] = []
    for item in text.split(","):
        try:
            budget = parse_size(item)
        except ValueError as exc:
            raise SimulateArgumentError(f"--budgets: {exc}") from None
        if budget <= 0:
            raise SimulateArgumentError(f"--budgets: {item.strip()!r} is not a budget: it must be above 0")
        budgets.append(budget)
    return budgets


def parse_policies(text: str) -> list[str]:
    """Comma-separated policy names, each one of :data:`~pypimirror.jobs.simulate.POLICIES`."""
    policies = [item.strip() for item in text.split(",")]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise SimulateArgumentError(
            f"--policies: unknown {', '.join(repr(p) for p in unknown)}; choose from {', '.join(POLICIES)}"
        )
    return list(dict.fromkeys(policies))


def run_simulation(
    config: Config,
    *,
    logs: Sequence[Path],
    log_format: str,
    path_prefix: str | None,
    budgets: Sequence[int],
    policies: Sequence[str],
    json_out: Path | None,
    plot_out: Path | None,
    stdout: TextIO,
) -> None:
    """Replay ``logs`` for every policy at every budget; print the table, write the outputs asked for."""
    for log in logs:
        if not log.is_file():
            raise SimulateArgumentError(f"--log {str(log)!r}: no such file")
    if plot_out is not None and plot_out.suffix.lower() not in (".svg", ".png"):
        raise SimulateArgumentError(f"--plot {str(plot_out)!r}: the file name must end in .svg or .png")
    started = time.monotonic()
    listed = scan_listed_files(config.repo_path, config.prefix)
    logger.info("simulate: the stored pages list %d files (%.1fs)", len(listed), time.monotonic() - started)
    reader = TraceReader(
        logs,
        log_format=log_format,
        path_prefix=config.prefix if path_prefix is None else path_prefix,
        bots=config.votes.bots,
    )
    trace = compact_trace(reader, listed)
    releases = release_listing(trace, listed, int(config.cache.vote_window.total_seconds()))
    del listed  # a whole index's files; the replay needs only the few above
    stats = reader.stats
    logger.info(
        "simulate: %d log lines, %d requests (%d for unlisted files), %d malformed, %d outside the "
        "prefix, %d excluded (%.1fs)", stats.lines, stats.requests, trace.unlisted_requests,
        stats.skipped_lines, stats.out_of_prefix, stats.excluded, time.monotonic() - started,
    )
    results = simulate(trace, budgets, policies, cache=config.cache, schedule=config.schedule.cache, listed=releases)
    logger.info("simulate: replayed in %.1fs", time.monotonic() - started)
    stdout.write(format_table(trace, results, stats.skipped_lines))
    if json_out is not None:
        document = json.dumps(results_document(trace, results, stats.skipped_lines), indent=2) + "\n"
        try:
            json_out.write_text(document, encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot write {str(json_out)!r}: {exc.strerror or exc}") from exc
    if plot_out is not None:
        write_plot(results, plot_out)


def write_synthetic_log(
    config: Config, *, days: int, requests: int, popularity: Path, seed: int, out: Path, stdout: TextIO
) -> None:
    """Write a synthetic trace in the ``combined`` format from the stored pages and a popularity CSV."""
    if days < 1:
        raise SimulateArgumentError(f"--synthetic: {days} is not a number of days (1 or more)")
    if requests < 0:
        raise SimulateArgumentError(f"--requests: {requests} is not a number of requests (0 or more)")
    if not popularity.is_file():
        raise SimulateArgumentError(f"--popularity {str(popularity)!r}: no such file")
    listed = scan_listed_files(config.repo_path, config.prefix)
    summary = write_synthetic_trace(
        out,
        listed=listed,
        popularity=read_popularity_csv(popularity),
        days=days,
        requests=requests,
        seed=seed,
        model=SyntheticModel(prefix=config.prefix),
    )
    stdout.write(
        f"wrote {summary.requests} requests over {days} days to {out}: {summary.distinct_files} distinct files "
        f"({summary.distinct_bytes} bytes) of {summary.projects} projects, {summary.networks} networks\n"
    )
