"""Benchmark of ``pypimirror simulate``: its speed, and the cache policies on synthetic traces.

Two parts, each a real ``pypimirror simulate`` process (time and peak memory measured from outside):

1. speed: a trace of ``--speed-requests`` (10 M) requests over 30 days, replayed with hourly
   planning for all four policies at one budget (10 % of the trace's distinct bytes). Target:
   under 10 minutes and 2 GB (the peak of the process and its replay workers together).
2. policies: a trace of ``--requests`` (10 M, the speed part's trace; the target asks for at
   least 5 M) over 30 days at budgets of 2, 5, 10 and 20 % of its distinct bytes. Targets: ``default`` reaches >= 95 % of ``static-greedy``'s request hit rate
   at every budget, beats ``seed`` by >= 15 points at 5 %, and fetches no more than twice
   ``seed``'s upstream bytes.

Inputs: a stored-pages repository for the projects of the popularity list
(``bench/_synthetic_index.py``) and synthetic traces of it (``pypimirror.synthtrace``), built
once and kept in ``--cache-dir``. ``--popularity CSV`` takes real download counts per project;
without it the projects are 15,000 made-up names with a Zipf popularity (the output says which).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _synthetic_index import popularity_csv_text, synthetic_project_names, write_synthetic_index, zipf_popularity

from pypimirror.pagescan import scan_listed_files
from pypimirror.popularity import read_popularity_csv
from pypimirror.synthtrace import write_synthetic_trace

DAYS = 30
SHARES = (0.02, 0.05, 0.10, 0.20)
SPEED_SHARE = 0.10
SPEED_LIMIT_S = 600.0
RSS_LIMIT = 2 * 1024**3
MEMORY_SAMPLE_S = 0.5
POLICIES = ("seed", "default", "lru", "static-greedy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--popularity", type=Path, help="CSV of downloads per project (default: Zipf over 15,000 names)")
    parser.add_argument("--requests", type=int, default=10_000_000, help="requests of the policy trace (default 10M)")
    parser.add_argument("--speed-requests", type=int, default=10_000_000, help="requests of the speed trace (default 10M)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/pypimirror-bench-simulate"))
    parser.add_argument("--only", choices=("speed", "policies"), help="run one part")
    parser.add_argument("--plot", type=Path, help="also write the policy plot (.svg)")
    parser.add_argument("--json", type=Path, help="save the raw figures")
    args = parser.parse_args()

    work = args.cache_dir / (f"csv-{args.popularity.stem}" if args.popularity else "zipf-15000")
    config = prepare_site(work, args.popularity)
    source = f"popularity from {args.popularity.name}" if args.popularity else "Zipf popularity over 15,000 made-up projects"
    print(f"inputs: {source}; synthetic stored pages and traces in {work}")
    figures: dict[str, Any] = {"popularity": source}
    verdicts: list[tuple[str, bool]] = []
    if args.only in (None, "speed"):
        trace, summary = prepare_trace(work, args.speed_requests, args.seed)
        budget = int(summary["distinct_bytes"] * SPEED_SHARE)
        run = run_simulate(config, trace, [budget], work / "speed.json", None)
        figures["speed"] = {"requests": args.speed_requests, **run}
        print(f"\nspeed: {args.speed_requests} requests over {DAYS} days, hourly planning, 4 policies at 1 budget: "
              f"{run['seconds']:.0f} s, peak memory {run['max_rss'] / 1024**2:.0f} MiB")
        verdicts.append((f"speed: under {SPEED_LIMIT_S / 60:.0f} min", run["seconds"] < SPEED_LIMIT_S))
        verdicts.append(("speed: under 2 GB", run["max_rss"] < RSS_LIMIT))
    if args.only in (None, "policies"):
        trace, summary = prepare_trace(work, args.requests, args.seed)
        budgets = [int(summary["distinct_bytes"] * share) for share in SHARES]
        run = run_simulate(config, trace, budgets, work / "policies.json", args.plot)
        figures["policies"] = run
        print(f"\npolicies: {args.requests} requests over {DAYS} days ({run['seconds']:.0f} s)")
        print(run["table"], end="")
        verdicts.extend(policy_verdicts(run["document"], budgets))
    print()
    for name, passed in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if all(passed for _, passed in verdicts) else 1


def prepare_site(work: Path, popularity_csv: Path | None) -> Path:
    """The stored pages, the popularity CSV and a config, written once per popularity source."""
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "popularity.csv"
    if popularity_csv is not None:
        names = list(read_popularity_csv(popularity_csv))
        if not csv.exists():
            csv.write_bytes(popularity_csv.read_bytes())
    else:
        names = synthetic_project_names(15_000)
        if not csv.exists():
            csv.write_text(popularity_csv_text(zipf_popularity(names)))
    repo = work / "repo"
    if not (repo / "simple").exists():
        started = time.monotonic()
        write_synthetic_index(repo, names, seed=1)
        print(f"wrote the stored pages of {len(names)} projects in {time.monotonic() - started:.0f} s")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "repo_path": str(repo),
        "upstream": {"pypi_url": "https://index.example.org", "packages_url": "https://files.example.org/packages"},
        "cache": {"size_limit": "1t"},
        "schedule": {"cache": "1h"},
    }))
    return config


def prepare_trace(work: Path, requests: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """A synthetic trace of ``requests`` over 30 days and its summary, written once."""
    trace = work / f"trace-{requests}-{seed}.log"
    summary_path = trace.with_suffix(".json")
    if not trace.exists() or not summary_path.exists():
        started = time.monotonic()
        listed = scan_listed_files(work / "repo", "/pypi")
        summary = write_synthetic_trace(
            trace, listed=listed, popularity=read_popularity_csv(work / "popularity.csv"),
            days=DAYS, requests=requests, seed=seed,
        )
        summary_path.write_text(json.dumps({"distinct_bytes": summary.distinct_bytes, "distinct_files": summary.distinct_files}))
        print(f"wrote a trace of {requests} requests in {time.monotonic() - started:.0f} s")
    return trace, json.loads(summary_path.read_text())


def run_simulate(config: Path, trace: Path, budgets: list[int], out: Path, plot: Path | None) -> dict[str, Any]:
    """``pypimirror simulate`` in a child process: its table, its JSON, wall time and peak memory."""
    command = [sys.executable, "-m", "pypimirror", "simulate", "-c", str(config), "--log", str(trace),
               "--budgets", ",".join(str(b) for b in budgets), "--policies", ",".join(POLICIES), "--json", str(out)]
    if plot is not None:
        command += ["--plot", str(plot)]
    started = time.monotonic()
    peak_tree = 0
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        while True:
            peak_tree = max(peak_tree, tree_memory(process.pid))
            try:
                returncode = process.wait(timeout=MEMORY_SAMPLE_S)
                break
            except subprocess.TimeoutExpired:
                continue
        seconds = time.monotonic() - started
        stdout.seek(0)
        stderr.seek(0)
        if returncode != 0:
            raise SystemExit(f"simulate failed ({returncode}):\n{stderr.read()}")
        table = stdout.read()
    # ru_maxrss is the largest of the processes, not their sum: the forked workers are added
    # by sampling their proportional set sizes (shared pages counted once) while they run.
    max_rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, peak_tree)
    return {"seconds": seconds, "max_rss": max_rss, "table": table, "document": json.loads(out.read_text())}


def tree_memory(pid: int) -> int:
    """Bytes the process ``pid`` and its descendants use (summed PSS), 0 where /proc cannot tell."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # gone meanwhile, or not Linux
        total += next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0)
        pending.extend(int(child) for child in children)
    return total


def policy_verdicts(document: dict[str, Any], budgets: list[int]) -> list[tuple[str, bool]]:
    """The policy targets, one verdict each, with the figures in its name."""
    rate = {(r["policy"], r["budget"]): r["request_hit_rate"] for r in document["results"]}
    upstream = {(r["policy"], r["budget"]): r["upstream_bytes"] for r in document["results"]}
    verdicts = []
    for share, budget in zip(SHARES, budgets, strict=True):
        ratio = rate[("default", budget)] / rate[("static-greedy", budget)] if rate[("static-greedy", budget)] else 0.0
        verdicts.append((f"{share:.0%}: default at {ratio:.1%} of static-greedy's hit rate (>= 95 %)", ratio >= 0.95))
    five = budgets[SHARES.index(0.05)]
    gain = 100 * (rate[("default", five)] - rate[("seed", five)])
    verdicts.append((f"5%: default beats seed by {gain:.1f} points (>= 15)", gain >= 15))
    for share, budget in zip(SHARES, budgets, strict=True):
        seed_bytes = upstream[("seed", budget)]
        factor = upstream[("default", budget)] / seed_bytes if seed_bytes else float("inf")
        verdicts.append((f"{share:.0%}: default fetches {factor:.2f}x seed's upstream bytes (<= 2x)", factor <= 2))
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
