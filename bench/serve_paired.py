"""Paired serve benchmark: the mirror and the bare Tornado handler on one CPU, loaded at once.

``serve.py`` loads each system alone, one after the other; on a small shared VM a single run of
it swings by ±10 %, and the kernel's spreading of 16 connections over two workers adds more.
Here the mirror (``serve.workers: 1``) and the bare Tornado handler (one process) are pinned to
the same CPU and loaded **at the same moment** by two wrk pinned to the other CPUs. The scheduler
gives each server half of that CPU, so the ratio of their req/s is the inverse ratio of their
CPU cost per request, and whatever the machine does meanwhile hits both alike: rounds agree
within a few per cent. Workloads: the two that ``serve.py`` judges against the bare handler,
the hot project page (JSON) and the 302 miss with its vote; the target is the same, the
mirror at ≥ 90 % of the bare handler (the median of the rounds' ratios).

Run ``.venv/bin/python bench/serve_paired.py`` (about a minute). Needs wrk and at least 2 CPUs.
Exit status: 0 every target met, 1 one missed, 2 wrk missing or a single CPU.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_fixture import build_fixture  # noqa: E402
from _serve_systems import (  # noqa: E402
    Server,
    Servers,
    ensure_tools,
    free_port,
    load_average,
    machine_summary,
    mirror_command,
    pinned_to,
    terminate_as_interrupt,
)
from _wrk import find_wrk, run_wrk_at_once, wrk_version  # noqa: E402
from serve import BARE, MIRROR, Workload, make_workloads, start_bare  # noqa: E402

_TARGET = 0.9
_JUDGED = ("page", "miss")


def measure(
    wrk: str, pair: dict[str, Server], workload: Workload, args: argparse.Namespace, load_cpus: set[int]
) -> float:
    """One round: both servers loaded at once; the mirror's req/s over the bare handler's."""
    results = run_wrk_at_once(
        wrk, {name: server.url(workload.path) for name, server in pair.items()}, connections=args.connections,
        duration_s=args.duration, headers=workload.headers, pin=pinned_to(load_cpus),
    )
    print(f"  {workload.key}: mirror {results[MIRROR].rps:,.0f} req/s, bare {results[BARE].rps:,.0f} req/s",
          file=sys.stderr)
    return results[MIRROR].rps / results[BARE].rps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds per round (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="per server (default 16)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    args = parser.parse_args(argv)
    notes = ensure_tools(install=not args.no_install)
    wrk = find_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    if wrk is None or len(cpus) < 2:
        print("paired serve benchmark: needs wrk and 2 CPUs; " + "; ".join(notes), file=sys.stderr)
        return 2
    server_cpu, load_cpus = cpus[-1], set(cpus[:-1])
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="pypimirror-serve-paired-"))
    ratios: dict[str, list[float]] = {key: [] for key in _JUDGED}
    try:
        with terminate_as_interrupt(), Servers(workdir) as servers:
            mirror_port = free_port()
            fx = build_fixture(workdir, port=mirror_port, workers=1)
            pair = {
                MIRROR: servers.start(MIRROR, [*pinned_to([server_cpu]), *mirror_command(sys.executable, fx.config)],
                                      mirror_port, fx.page_url),
                BARE: start_bare(servers, fx, free_port(), 1, pin=pinned_to([server_cpu])),
            }
            workloads = [w for w in make_workloads(fx) if w.key in _JUDGED]
            for round_number in range(1, args.rounds + 1):
                print(f"round {round_number} of {args.rounds}", file=sys.stderr)
                for workload in workloads:
                    ratios[workload.key].append(measure(wrk, pair, workload, args, load_cpus))
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Paired serve benchmark, {machine_summary()}, {wrk_version(wrk)}; load average before: {load_before}.")
    print(f"Both servers on CPU {server_cpu}, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s on CPU {','.join(map(str, sorted(load_cpus)))}, "
          f"{args.rounds} rounds; mirror serve.workers 1, bare Tornado 1 process.")
    all_pass = True
    for workload in workloads:
        values = ratios[workload.key]
        median = statistics.median(values)
        passed = median >= _TARGET
        all_pass &= passed
        print(f"{workload.label}: mirror / bare {median:.1%} (rounds {min(values):.1%}–{max(values):.1%}), "
              f"target ≥ {_TARGET:.0%}: {'PASS' if passed else 'FAIL'}")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
