"""Paired view benchmark: a hot project page through ``+cooldown/7d`` against the same page plain.

Two identical mirrors (``serve.workers: 1``, each on the serve benchmark's repository) are
pinned to the same CPU and loaded at the same moment by two wrk pinned to the other CPUs, as
``serve_paired.py`` pairs the mirror with the bare handler: one wrk asks for the plain project
page, the other for the same page through the view (JSON, kept in memory by both). The
scheduler gives each server half of that CPU, so the ratio of their req/s is the inverse ratio
of their CPU cost per request. The target: the view at ≥ 80 % of the plain page (the median of
the rounds' ratios). Every page of the fixture is older than seven days, so the view shows
the whole page and both answers are the same size.

Run ``.venv/bin/python bench/serve_views.py`` (about a minute). Needs wrk and at least 2 CPUs.
Exit status: 0 the target met, 1 missed, 2 wrk missing or a single CPU.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_fixture import PAGE_TYPE, PREFIX, build_fixture  # noqa: E402
from _serve_systems import (  # noqa: E402
    Server,
    Servers,
    ensure_tools,
    fetch,
    free_port,
    load_average,
    machine_summary,
    mirror_command,
    pinned_to,
    terminate_as_interrupt,
)
from _wrk import find_wrk, run_wrk_at_once, wrk_version  # noqa: E402

_TARGET = 0.8
_VIEW = "+cooldown/7d"
_HEADERS = {"Accept": PAGE_TYPE}


def measure(wrk: str, loads: dict[str, tuple[Server, str]], args: argparse.Namespace, load_cpus: set[int]) -> float:
    """One round: both servers loaded at once; the view's req/s over the plain page's."""
    results = run_wrk_at_once(
        wrk, {name: server.url(path) for name, (server, path) in loads.items()}, connections=args.connections,
        duration_s=args.duration, headers=_HEADERS, pin=pinned_to(load_cpus),
    )
    print(f"  plain {results['plain'].rps:,.0f} req/s, view {results['view'].rps:,.0f} req/s", file=sys.stderr)
    return results["view"].rps / results["plain"].rps


def check_pages(loads: dict[str, tuple[Server, str]]) -> None:
    """Both pages answer 200 with the same files (only their URLs differ)."""
    files = {}
    for name, (server, path) in loads.items():
        status, _, body = fetch(server.port, path, _HEADERS)
        if status != 200:
            raise RuntimeError(f"{name} page {path}: status {status}")
        files[name] = [f["filename"] for f in json.loads(body)["files"]]
    if files["plain"] != files["view"] or not files["plain"]:
        raise RuntimeError(f"the view's page lists other files: {files}")


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
        print("view benchmark: needs wrk and 2 CPUs; " + "; ".join(notes), file=sys.stderr)
        return 2
    server_cpu, load_cpus = cpus[-1], set(cpus[:-1])
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="pypimirror-serve-views-"))
    ratios: list[float] = []
    try:
        with terminate_as_interrupt(), Servers(workdir) as servers:
            loads: dict[str, tuple[Server, str]] = {}
            for name in ("plain", "view"):
                port = free_port()
                fx = build_fixture(workdir / name, port=port, workers=1)
                path = fx.page_url if name == "plain" else fx.page_url.replace(f"{PREFIX}/", f"{PREFIX}/{_VIEW}/", 1)
                command = [*pinned_to([server_cpu]), *mirror_command(sys.executable, fx.config)]
                loads[name] = (servers.start(name, command, port, fx.page_url), path)
            check_pages(loads)
            for round_number in range(1, args.rounds + 1):
                print(f"round {round_number} of {args.rounds}", file=sys.stderr)
                ratios.append(measure(wrk, loads, args, load_cpus))
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    median = statistics.median(ratios)
    passed = median >= _TARGET
    print(f"Paired view benchmark, {machine_summary()}, {wrk_version(wrk)}; load average before: {load_before}.")
    print(f"Both mirrors on CPU {server_cpu}, wrk -t1 -c{args.connections} -d{args.duration}s on CPU "
          f"{','.join(map(str, sorted(load_cpus)))}, {args.rounds} rounds; serve.workers 1 each.")
    print(f"hot project page (JSON) through {_VIEW} / plain: {median:.1%} (rounds {min(ratios):.1%}–{max(ratios):.1%}), "
          f"target ≥ {_TARGET:.0%}: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
