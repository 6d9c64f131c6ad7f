"""Workers benchmark: the hot project page with ``serve.workers: 2`` against 1, with wrk.

Why: one Tornado process saturates one core; on a 2-core machine a second worker should give
most of a second core's worth of requests. The performance anchors measured x1.5-1.8 for bare
Tornado (2 cores shared with wrk), so the target is **>= 1.6x the req/s of one worker** on the
hot project page (PEP 691 JSON, served from the page cache).

Method: both servers run at once on their own ports, idle
unless targeted, over the same repository (``bench/_serve_fixture.py``); every connection count
runs on both in turn, the order rotating each round; the ratio is the median of the per-round
ratios. After the load the script reads each worker's CPU time from ``/proc`` to show that
both took a share.

Run ``.venv/bin/python bench/workers.py`` (about 1.5 min; ``--quick`` about 20 s). It installs
wrk with apt-get when missing and it can. Traffic goes to 127.0.0.1 only; every process it
starts is stopped on exit, Ctrl-C included. Exit status: 0 target met, 1 missed or not
measurable, 2 no wrk, 130 interrupted.
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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve_fixture import PAGE_TYPE, Fixture, build_fixture  # noqa: E402
from _serve_systems import (  # noqa: E402
    Server,
    Servers,
    ServerUnavailable,
    ensure_tools,
    fetch,
    free_port,
    load_average,
    machine_summary,
    mirror_command,
    terminate_as_interrupt,
)
from _wrk import WrkResult, find_wrk, run_wrk, wrk_version  # noqa: E402

TARGET = 1.6
SYSTEMS = ("workers-1", "workers-2")
_HEADERS = {"Accept": PAGE_TYPE}


@dataclass
class Results:
    """Every run: (round, system, connections) -> wrk result."""

    runs: dict[tuple[int, str, int], WrkResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def rps(self, system: str, conns: int) -> list[float]:
        return [r.rps for (_, s, c), r in sorted(self.runs.items()) if s == system and c == conns]

    def ratio(self, conns: int) -> float | None:
        """Median over rounds of workers-2 / workers-1 within the same round."""
        paired = [
            self.runs[(rnd, "workers-2", c)].rps / result.rps
            for (rnd, system, c), result in self.runs.items()
            if system == "workers-1" and c == conns and (rnd, "workers-2", c) in self.runs and result.rps > 0
        ]
        return statistics.median(paired) if paired else None

    def errors(self, system: str, conns: int) -> int:
        return sum(r.bad_status + r.socket_errors for (_, s, c), r in self.runs.items() if s == system and c == conns)


def write_configs(fx: Fixture, ports: dict[str, int]) -> dict[str, Path]:
    """The fixture's configuration once per system, differing in port and ``serve.workers`` only."""
    base = yaml.safe_load(fx.config.read_text())
    configs = {}
    for system, workers in zip(SYSTEMS, (1, 2), strict=True):
        doc = {**base, "listen": f"127.0.0.1:{ports[system]}", "serve": {"workers": workers}}
        path = fx.config.with_name(f"{system}.yaml")
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        configs[system] = path
    return configs


def check_page(server: Server, fx: Fixture) -> None:
    """One request before any load: the page, byte for byte, or no measurement."""
    status, headers, body = fetch(server.port, fx.page_url, _HEADERS)
    if status != 200 or headers.get("content-type") != PAGE_TYPE or body != fx.page_bytes:
        raise ServerUnavailable(f"{server.name} answered {status} {headers.get('content-type')!r}, "
                                f"{len(body)} bytes; expected the {len(fx.page_bytes)}-byte page")


def worker_cpu_seconds(server: Server) -> dict[int, float]:
    """User + system CPU seconds of each process in the server's session (the parent and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    return {pid: (int(fields[11]) + int(fields[12])) / ticks for pid, fields in server.session_stats().items()}


def run_rounds(wrk: str, started: dict[str, Server], fx: Fixture, args: argparse.Namespace, results: Results) -> None:
    total = args.rounds * len(args.connections) * len(SYSTEMS)
    done = 0
    for round_no in range(1, args.rounds + 1):
        order = SYSTEMS if round_no % 2 else tuple(reversed(SYSTEMS))
        for conns in args.connections:
            for system in order:
                done += 1
                result = run_wrk(wrk, started[system].url(fx.page_url), connections=conns,
                                 duration_s=args.duration, headers=_HEADERS)
                results.runs[(round_no, system, conns)] = result
                print(f"[{done}/{total}] round {round_no} c{conns} {system}: {result.rps:,.0f} req/s, "
                      f"p99 {result.p99_ms:.1f} ms", file=sys.stderr)
                time.sleep(args.pause)


def report(results: Results, args: argparse.Namespace, header: list[str]) -> tuple[str, bool]:
    lines = [*header, "", "| conns | workers: 1 req/s | workers: 2 req/s | ratio | target | result |",
             "|---|---|---|---|---|---|"]
    all_pass = True
    for conns in args.connections:
        ratio = results.ratio(conns)
        errors = sum(results.errors(system, conns) for system in SYSTEMS)
        verdict = "n/a" if ratio is None else f"FAIL ({errors} errors)" if errors else (
            "PASS" if ratio >= TARGET else "FAIL")
        all_pass = all_pass and verdict == "PASS"
        cells = [_cell(results.rps(system, conns)) for system in SYSTEMS]
        shown = "–" if ratio is None else f"×{ratio:.2f}"
        lines.append(f"| {conns} | {cells[0]} | {cells[1]} | {shown} | ≥ ×{TARGET} | {verdict} |")
    lines += [""] + [f"- {note}" for note in results.notes]
    return "\n".join(lines).rstrip() + "\n", all_pass


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    median = f"{statistics.median(values):,.0f}"
    return median if len(values) == 1 else f"{median} ({min(values):,.0f}–{max(values):,.0f})"


def describe_setup(args: argparse.Namespace, wrk: str) -> list[str]:
    return [
        f"Workers benchmark, {machine_summary()}, {wrk_version(wrk)}.",
        f"Hot project page (PEP 691 JSON, {{size}} bytes) with `Accept: {PAGE_TYPE}`; "
        f"`wrk -t2 -c{{{','.join(map(str, args.connections))}}} -d{args.duration}s --timeout 30s`, "
        f"{args.rounds} round(s), order alternating; figures are medians (min–max); the ratio is the median "
        "of per-round ratios. wrk shares the 2 cores with the servers; no access log.",
        f"Load average (1/5/15 min) before the run: {load_average()}.",
    ]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs (about 20 s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", default="16,128", help="comma-separated wrk -c values (default 16,128)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs (default 1)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--json", type=Path, help="also write every run as JSON lines to this file")
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in str(args.connections).split(",")]
    if args.quick:
        args.rounds, args.duration, args.pause = 1, 3, 0.5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    results = Results(notes=[note for note in ensure_tools(install=not args.no_install) if "nginx" not in note])
    wrk = find_wrk()
    if wrk is None:
        print("workers benchmark: wrk is not available: " + "; ".join(results.notes), file=sys.stderr)
        return 2
    header = describe_setup(args, wrk)
    workdir = Path(tempfile.mkdtemp(prefix="pypimirror-workers-bench-"))
    try:
        with terminate_as_interrupt(), Servers(workdir) as servers:
            ports = {system: free_port() for system in SYSTEMS}
            fx = build_fixture(workdir, port=ports[SYSTEMS[0]], workers=1)
            header[1] = header[1].replace("{size}", f"{len(fx.page_bytes):,}")
            configs = write_configs(fx, ports)
            started = {}
            for system in SYSTEMS:
                argv = mirror_command(sys.executable, configs[system])
                started[system] = servers.start(system, argv, ports[system], fx.page_url)
                check_page(started[system], fx)
            results.notes.append(
                "processes per server (parent + workers): "
                + ", ".join(f"{s} {started[s].process_count()}" for s in SYSTEMS))
            before = {s: worker_cpu_seconds(started[s]) for s in SYSTEMS}
            run_rounds(wrk, started, fx, args, results)
            for system in SYSTEMS:
                parent = started[system].process.pid
                after = worker_cpu_seconds(started[system])
                spent = {pid: after[pid] - before[system].get(pid, 0.0) for pid in after}
                workers = " / ".join(f"{spent[pid]:.1f}" for pid in sorted(spent) if pid != parent)
                results.notes.append(f"{system}: CPU seconds under load: " + (
                    f"supervisor {spent.get(parent, 0.0):.1f}, workers {workers}" if workers
                    else f"the one process {spent.get(parent, 0.0):.1f}"))
        results.notes.append(f"load average after the run: {load_average()}")
        text, all_pass = report(results, args, header)
    except ServerUnavailable as exc:
        print(f"workers benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text("".join(
            json.dumps({"round": rnd, "system": system, "conns": conns, "rps": round(result.rps, 1),
                        "p99_ms": result.p99_ms, "errors": result.bad_status + result.socket_errors}) + "\n"
            for (rnd, system, conns), result in sorted(results.runs.items())))
    print(text)
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
