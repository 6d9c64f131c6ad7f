"""Serve benchmark: pypimirror against a bare Tornado handler and nginx, side by side, with wrk.

Why: the mirror's own logic (negotiation, path checks, tier lookup, votes) should cost almost
nothing on top of Tornado, and its cached-file path should come close to nginx's sendfile.
The method: every server runs at once on its
own port, idle unless targeted; each (workload, connections) cell runs on every server in
turn, the order rotating each round; figures are medians over rounds. Targets:

* hot project page (PEP 691 JSON) and 302 miss: >= 90 % of the bare Tornado handler's req/s;
* cached 2 MiB file: >= 0.6x nginx's MB/s; cached 50 MiB file: >= 0.9x nginx's MB/s.

The 302 miss hits one URL, so after the first vote of each dedup window (5 minutes) the
mirror's votes are no-ops in the database; the request still offers each one to the queue.

Run ``.venv/bin/python bench/serve.py`` (about 4 min; ``--quick`` under 1 min). It installs
nginx and wrk with apt-get when missing and it can (root); without nginx its column is
skipped. Traffic goes to 127.0.0.1 only, and every process it starts is stopped on exit,
Ctrl-C included. Exit status: 0 all targets met, 1 a target missed or not measurable, 2 no wrk,
130 interrupted.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

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
    nginx_binary,
    nginx_conf,
    nginx_version,
    terminate_as_interrupt,
)
from _wrk import WrkResult, find_wrk, run_wrk, wrk_version  # noqa: E402

logger = logging.getLogger(__name__)

MIRROR = "pypimirror"
BARE = "tornado-bare"
NGINX = "nginx-1w"
SYSTEMS = (MIRROR, BARE, NGINX)
_BARE_SCRIPT = Path(__file__).resolve().parent / "_bare_tornado.py"
_ACCEPT_JSON = {"Accept": PAGE_TYPE}


@dataclass(frozen=True, slots=True)
class Workload:
    """One URL to load, how to check a response to it, and the metric and target it is judged by."""

    key: str
    label: str
    path: str
    headers: dict[str, str]
    check: Callable[[int, dict[str, str], bytes], str | None]  # None when the response is right
    metric: str  # "rps" or "mib"
    baseline: str  # the system the target compares with
    target: float


@dataclass(frozen=True, slots=True)
class Run:
    """One wrk run of one cell on one system."""

    round: int
    system: str
    workload: str
    conns: int
    result: WrkResult

    def value(self, key: str) -> float:
        """``rps``, ``mib`` or ``p99_ms``."""
        figures = {"rps": self.result.rps, "mib": self.result.mib_per_s, "p99_ms": self.result.p99_ms}
        return figures[key]

    def to_json(self) -> str:
        return json.dumps(
            {
                "round": self.round,
                "system": self.system,
                "workload": self.workload,
                "conns": self.conns,
                "rps": round(self.result.rps, 1),
                "mib_per_s": round(self.result.mib_per_s, 1),
                **dataclasses.asdict(self.result),
            }
        )


@dataclass
class Results:
    """Every run, plus which (system, workload) cells could not be measured and why."""

    runs: list[Run] = field(default_factory=list)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cell(self, system: str, workload: Workload, conns: int) -> list[Run]:
        return [
            run
            for run in self.runs
            if run.system == system and run.workload == workload.key and run.conns == conns
        ]

    def values(self, system: str, workload: Workload, conns: int, key: str) -> list[float]:
        return [run.value(key) for run in self.cell(system, workload, conns)]


# -- workloads -------------------------------------------------------------------------------


def _expect_body(
    content_type: str | None, size: int, sha256: str
) -> Callable[[int, dict[str, str], bytes], str | None]:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"status {status}, expected 200"
        if content_type and headers.get("content-type", "").split(";")[0].strip() != content_type:
            return f"Content-Type {headers.get('content-type')!r}, expected {content_type!r}"
        if len(body) != size or hashlib.sha256(body).hexdigest() != sha256:
            return f"body of {len(body)} bytes differs from the {size} bytes on disk"
        return None

    return check


def _expect_redirect(location: str) -> Callable[[int, dict[str, str], bytes], str | None]:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 302:
            return f"status {status}, expected 302"
        if headers.get("location") != location:
            return f"Location {headers.get('location')!r}, expected {location!r}"
        return None

    return check


def make_workloads(fx: Fixture) -> list[Workload]:
    page_sha = hashlib.sha256(fx.page_bytes).hexdigest()
    files = [
        Workload(
            key=f"file-{label}",
            label=f"cached {size // 2**20} MiB file",
            path=fx.file_urls[label],
            headers={},
            check=_expect_body(None, size, fx.file_sha256[label]),
            metric="mib",
            baseline=NGINX,
            target=target,
        )
        for label, size, target in (
            ("small", fx.file_paths["small"].stat().st_size, 0.6),
            ("large", fx.file_paths["large"].stat().st_size, 0.9),
        )
    ]
    return [
        Workload(
            "page",
            "hot project page (JSON)",
            fx.page_url,
            _ACCEPT_JSON,
            _expect_body(PAGE_TYPE, len(fx.page_bytes), page_sha),
            "rps",
            BARE,
            0.9,
        ),
        Workload(
            "miss", "302 miss (+ vote)", fx.miss_url, {}, _expect_redirect(fx.miss_location), "rps", BARE, 0.9
        ),
        *files,
    ]


# -- servers ---------------------------------------------------------------------------------


def start_servers(
    servers: Servers, fx: Fixture, ports: dict[str, int], workers: int, results: Results
) -> dict[str, Server]:
    """Start what can be started; record why any system is unavailable."""
    started: dict[str, Server] = {}
    starters: dict[str, Callable[[], Server]] = {
        MIRROR: lambda: servers.start(
            MIRROR, mirror_command(sys.executable, fx.config), ports[MIRROR], fx.page_url
        ),
        BARE: lambda: start_bare(servers, fx, ports[BARE], workers),
        NGINX: lambda: _start_nginx(servers, fx, ports[NGINX]),
    }
    for name, starter in starters.items():
        try:
            started[name] = starter()
        except ServerUnavailable as exc:
            results.unavailable[name] = str(exc)
            print(f"{name}: unavailable: {exc}", file=sys.stderr)
    return started


def start_bare(servers: Servers, fx: Fixture, port: int, workers: int, *, pin: Sequence[str] = ()) -> Server:
    """The bare Tornado server over the fixture's bytes; ``pin`` prefixes its command (a CPU pin)."""
    spec = {
        "port": port,
        "workers": workers,
        "bodies": {
            fx.page_url: [PAGE_TYPE, str(fx.repo / fx.page_file)],
            **{
                fx.file_urls[label]: ["application/octet-stream", str(path)]
                for label, path in fx.file_paths.items()
            },
        },
        "redirects": {fx.miss_url: fx.miss_location},
    }
    spec_path = servers.workdir / "bare.json"
    spec_path.write_text(json.dumps(spec))
    return servers.start(BARE, [*pin, sys.executable, str(_BARE_SCRIPT), str(spec_path)], port, fx.page_url)


def _start_nginx(servers: Servers, fx: Fixture, port: int) -> Server:
    nginx = nginx_binary()
    if nginx is None:
        raise ServerUnavailable("nginx is not installed (apt-get install nginx); skipping its column")
    confdir = servers.workdir / "nginx"
    confdir.mkdir()
    conf = nginx_conf(
        confdir=confdir,
        port=port,
        repo=fx.repo,
        page_url=fx.page_url,
        page_file=fx.page_file,
        page_type=PAGE_TYPE,
        packages_url=fx.packages_url,
        tier=fx.tier,
        redirects={fx.miss_url: fx.miss_location},
    )
    (confdir / "nginx.conf").write_text(conf)
    argv = [nginx, "-c", str(confdir / "nginx.conf"), "-p", str(confdir)]
    return servers.start(NGINX, argv, port, fx.page_url)


def validate(started: dict[str, Server], workloads: Sequence[Workload], results: Results) -> None:
    """One request per cell before any load: a server that answers wrongly is not measured there."""
    for name, server in started.items():
        for workload in workloads:
            status, headers, body = fetch(server.port, workload.path, workload.headers)
            problem = workload.check(status, headers, body)
            if problem is not None:
                results.skipped[(name, workload.key)] = problem
                print(f"{name} / {workload.key}: wrong answer, not measured: {problem}", file=sys.stderr)


# -- the rounds ------------------------------------------------------------------------------


def run_rounds(
    wrk: str,
    started: dict[str, Server],
    workloads: Sequence[Workload],
    args: argparse.Namespace,
    results: Results,
) -> None:
    """Every cell on every system, rotating the system order each round, as the anchors did."""
    systems = [name for name in SYSTEMS if name in started]
    total = args.rounds * len(workloads) * len(args.connections) * len(systems)
    done = 0
    for round_no in range(args.rounds):
        order = systems[round_no % len(systems) :] + systems[: round_no % len(systems)]
        for workload in workloads:
            for conns in args.connections:
                for name in order:
                    if (name, workload.key) in results.skipped:
                        continue
                    done += 1
                    result = run_wrk(
                        wrk,
                        started[name].url(workload.path),
                        connections=conns,
                        duration_s=args.duration,
                        headers=workload.headers,
                    )
                    results.runs.append(Run(round_no + 1, name, workload.key, conns, result))
                    print(
                        f"[{done}/{total}] round {round_no + 1} {workload.key} c{conns} {name}: "
                        f"{result.rps:,.0f} req/s, {result.mib_per_s:,.1f} MB/s, p99 {result.p99_ms:.1f} ms"
                        + (f", {result.bad_status} bad status" if result.bad_status else "")
                        + (f", {result.socket_errors} socket errors" if result.socket_errors else ""),
                        file=sys.stderr,
                    )
                    time.sleep(args.pause)


# -- after the load: votes, and the mirror's own counters ---------------------------------------


def mirror_vote_notes(servers: Servers, mirror: Server, fx: Fixture) -> list[str]:
    """Stop the mirror (its queue drains on shutdown), then count the miss's stored votes."""
    notes = [f"mirror processes while serving: {mirror.process_count()}"]
    try:
        status, _, body = fetch(mirror.port, "/metrics")
        if status == 200:
            counters = [
                line
                for line in body.decode(errors="replace").splitlines()
                if "vote" in line and not line.startswith("#") and "_created" not in line
            ]
            notes += [f"mirror /metrics: {line}" for line in counters]
    except OSError as exc:
        notes.append(f"mirror /metrics unreadable: {exc}")
    code = servers.stop(mirror)
    notes.append(f"mirror exit status after SIGTERM: {code}")
    filename = fx.miss_url.rsplit("/", 1)[1]
    with closing(sqlite3.connect(fx.database)) as conn:
        query = "SELECT count(*) FROM votes WHERE file_path LIKE ?"
        (count,) = conn.execute(query, (f"%/{filename}",)).fetchone()
    notes.append(
        f"votes stored for the miss path: {count} (one per client network per 5 min dedup window; "
        "the other requests' votes were offered and deduplicated)"
    )
    return notes


# -- the report ------------------------------------------------------------------------------


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    median = statistics.median(values)
    text = f"{median:,.0f}" if median >= 100 else f"{median:,.1f}"
    return text if len(values) == 1 else f"{text} ({min(values):,.0f}–{max(values):,.0f})"


def _ratio(results: Results, workload: Workload, conns: int, system: str, other: str) -> float | None:
    """The median over rounds of each round's ratio.

    Within a round the systems run back to back, so pairing them by round cancels much of
    the drift in background load that a ratio of overall medians would keep.
    """
    mine = {run.round: run.value(workload.metric) for run in results.cell(system, workload, conns)}
    theirs = {run.round: run.value(workload.metric) for run in results.cell(other, workload, conns)}
    paired = [mine[r] / theirs[r] for r in sorted(mine.keys() & theirs.keys()) if theirs[r] > 0]
    return statistics.median(paired) if paired else None


def _verdict(results: Results, workload: Workload, conns: int) -> str:
    for system in (MIRROR, workload.baseline):
        reason = results.unavailable.get(system) or results.skipped.get((system, workload.key))
        if reason is not None:
            return f"n/a ({system} not measured)"
    errors = sum(
        run.result.bad_status + run.result.socket_errors for run in results.cell(MIRROR, workload, conns)
    )
    ratio = _ratio(results, workload, conns, MIRROR, workload.baseline)
    if ratio is None:
        return "n/a"
    if errors:
        return f"FAIL ({errors} errors)"
    return "PASS" if ratio >= workload.target else "FAIL"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def report(
    results: Results, workloads: Sequence[Workload], args: argparse.Namespace, header: list[str]
) -> tuple[str, bool]:
    """The Markdown report and whether every target was met."""
    lines = [
        *header,
        "",
        "| workload | metric | conns | pypimirror | tornado-bare | nginx-1w "
        "| mirror / bare | mirror / nginx | target | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    all_pass = True
    for workload in workloads:
        for conns in args.connections:
            cells = [_cell(results.values(s, workload, conns, workload.metric)) for s in SYSTEMS]
            verdict = _verdict(results, workload, conns)
            all_pass = all_pass and verdict == "PASS"
            target = f"≥ {workload.target:.0%} of {workload.baseline}"
            unit = "req/s" if workload.metric == "rps" else "MB/s"
            lines.append(
                f"| {workload.label} | {unit} | {conns} | {' | '.join(cells)} | "
                f"{_pct(_ratio(results, workload, conns, MIRROR, BARE))} | "
                f"{_pct(_ratio(results, workload, conns, MIRROR, NGINX))} | {target} | {verdict} |"
            )
    lines += [
        "",
        "p99 latency, ms (median over rounds):",
        "",
        "| workload | conns | pypimirror | tornado-bare | nginx-1w |",
        "|---|---|---|---|---|",
    ]
    for workload in workloads:
        for conns in args.connections:
            cells = [_p99(results.values(s, workload, conns, "p99_ms")) for s in SYSTEMS]
            lines.append(f"| {workload.label} | {conns} | {' | '.join(cells)} |")
    lines += [""] + [f"- {system} unavailable: {reason}" for system, reason in results.unavailable.items()]
    lines += [
        f"- {system} / {key} not measured: {reason}" for (system, key), reason in results.skipped.items()
    ]
    lines += [f"- {note}" for note in results.notes]
    return "\n".join(lines).rstrip() + "\n", all_pass


def _p99(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f}" if values else "–"


def describe_setup(args: argparse.Namespace, wrk: str) -> list[str]:
    nginx = nginx_binary()
    return [
        f"Serve benchmark, {machine_summary()}, nginx {nginx_version(nginx) if nginx else '(none)'}, "
        f"{wrk_version(wrk)}.",
        f"`wrk -t2 -c{{{','.join(map(str, args.connections))}}} -d{args.duration}s --timeout 30s`, "
        f"{args.rounds} round(s), system order rotating each round, {args.pause:g} s pause between runs; "
        "figures are medians (min–max over rounds); ratios are medians of the per-round ratios. "
        "wrk shares the CPU with the servers.",
        f"Load average (1/5/15 min) before the run: {load_average()}.",
        f"pypimirror: `serve.workers: {args.workers}`; tornado-bare: {args.workers} process(es) via "
        "fork_processes, bytes from memory; nginx: 1 worker, sendfile on, access_log off. "
        "MB/s is MiB/s as wrk counts it.",
    ]


# -- main ------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs (about 1 min)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--connections", default="16", help="comma-separated wrk -c values (default 16; e.g. 16,128)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="mirror serve.workers and bare Tornado processes (default 1)"
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs (default 1)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install nginx/wrk")
    parser.add_argument("--json", type=Path, help="also write every run as JSON lines to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in str(args.connections).split(",")]
    if args.quick:
        args.rounds, args.duration, args.pause = 1, 2, 0.5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    results = Results(notes=ensure_tools(install=not args.no_install))
    wrk = find_wrk()
    if wrk is None:
        print("serve benchmark: wrk is not available: " + "; ".join(results.notes), file=sys.stderr)
        return 2
    header = describe_setup(args, wrk)
    workdir = Path(tempfile.mkdtemp(prefix="pypimirror-serve-bench-"))
    try:
        with terminate_as_interrupt(), Servers(workdir) as servers:
            ports = {name: free_port() for name in SYSTEMS}
            print(f"writing the test repository under {workdir} ...", file=sys.stderr)
            fx = build_fixture(workdir, port=ports[MIRROR], workers=args.workers)
            workloads = make_workloads(fx)
            started = start_servers(servers, fx, ports, args.workers, results)
            validate(started, workloads, results)
            run_rounds(wrk, started, workloads, args, results)
            if MIRROR in started:
                results.notes += mirror_vote_notes(servers, started[MIRROR], fx)
        results.notes.append(f"load average after the run: {load_average()}")
        text, all_pass = report(results, workloads, args, header)
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text("".join(run.to_json() + "\n" for run in results.runs))
    print(text)
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
