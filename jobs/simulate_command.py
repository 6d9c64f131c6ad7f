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
import multiprocessing
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple, TextIO, TypeVar

from pypimirror.jobs.cache_successors import PREFETCH_POLICIES
from pypimirror.jobs.simulate import POLICIES, CompactTrace, compact_trace, fork_is_safe, release_listing, simulate
from pypimirror.jobs.simulate_report import format_table, results_document, write_plot

from pypimirror.config import Config
from pypimirror.configvalues import parse_size
from pypimirror.errors import PyPIMirrorError, StorageError
from pypimirror.listedfiles import project_of
from pypimirror.pagescan import ListedFile, read_projects_listed_files, scan_listed_files
from pypimirror.popularity import read_popularity_csv
from pypimirror.synthtrace import SyntheticModel, write_synthetic_trace
from pypimirror.trace import TraceReader

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
    listed = _ListedSizes(_scan_sizes(config.repo_path, config.prefix))
    logger.info("simulate: the stored pages list %d files (%.1fs)", len(listed), time.monotonic() - started)
    reader = TraceReader(
        logs,
        log_format=log_format,
        path_prefix=config.prefix if path_prefix is None else path_prefix,
        bots=config.votes.bots,
    )
    trace = compact_trace(reader, listed)
    del listed
    stats = reader.stats
    logger.info(
        "simulate: %d log lines, %d requests (%d for unlisted files), %d malformed, %d outside the "
        "prefix, %d excluded (%.1fs)", stats.lines, stats.requests, trace.unlisted_requests,
        stats.skipped_lines, stats.out_of_prefix, stats.excluded, time.monotonic() - started,
    )
    # Made in the call, so that simulate() holds the only reference and can drop the listing
    # (hundreds of thousands of records) once it has built the prefetch index from it.
    prefetching = any(policy in PREFETCH_POLICIES for policy in policies) and trace.requests > 0
    results = simulate(
        trace, budgets, policies, cache=config.cache, schedule=config.schedule.cache,
        listed=_release_files(config, trace) if prefetching else None,
    )
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


class _Listed(NamedTuple):
    path: str
    size: int


class _ListedSizes(Mapping[str, _Listed]):
    """The listed files as :func:`~pypimirror.jobs.simulate.compact_trace` reads them, from sizes by path."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self._sizes = sizes

    def __getitem__(self, path: str) -> _Listed:
        return _Listed(path, self._sizes[path])

    def __iter__(self) -> Iterator[str]:
        return iter(self._sizes)

    def __len__(self) -> int:
        return len(self._sizes)


def _scan_sizes(repo_path: Path, prefix: str) -> dict[str, int]:
    """The size of every file the stored pages list, by path; scanned in a forked child where it is safe.

    The scan holds a full record of each of a million and more files, and every parsed page on
    the way. Freed in this process, most of that memory would stay resident (the allocator
    keeps partly used blocks) and be shared with every replay worker, each of which writes into
    its own copy; a child returns it all to the system when it ends.
    """

    def sizes() -> dict[str, int]:
        return {path: listed.size for path, listed in scan_listed_files(repo_path, prefix).items()}

    return _in_child(sizes, name="simulate-scan", what=f"the scan of the stored pages under {str(repo_path)!r}")


def _release_files(config: Config, trace: CompactTrace) -> dict[str, ListedFile]:
    """The listed files the release prefetch of ``trace``'s replay needs
    (:func:`~pypimirror.jobs.simulate.release_listing`), read from its projects' pages in a
    forked child where it is safe, for the reason :func:`_scan_sizes` gives."""

    def releases() -> dict[str, ListedFile]:
        names = {name for name in map(project_of, trace.paths) if name is not None}
        listed = read_projects_listed_files(config.repo_path, config.prefix, names)
        return release_listing(trace, listed, int(config.cache.vote_window.total_seconds()))

    what = f"the read of the release pages under {str(config.repo_path)!r}"
    return _in_child(releases, name="simulate-releases", what=what)


class _ChildFailure(NamedTuple):
    """What a forked child sends back instead of its result: the message of what it raised."""

    message: str


def _in_child(work: Callable[[], T], *, name: str, what: str) -> T:
    """``work()`` run in a forked child (in this process where forking is not safe), its result
    sent back through a pipe; a failure there is a StorageError here, saying ``what`` failed."""
    if not fork_is_safe():
        return work()
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_send_outcome, args=(work, sender), name=name, daemon=True)
    child.start()
    sender.close()
    try:
        outcome: T | _ChildFailure = receiver.recv()
    except EOFError:
        child.join()
        raise StorageError(f"{what} ended without a result (exit code {child.exitcode})") from None
    finally:
        receiver.close()
    child.join()
    if isinstance(outcome, _ChildFailure):
        raise StorageError(f"{what} failed: {outcome.message}")
    return outcome


def _send_outcome(work: Callable[[], object], results: Connection) -> None:
    try:
        results.send(work())
    except Exception as exc:  # the parent raises it, with its message
        results.send(_ChildFailure(str(exc)))
    finally:
        results.close()


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
