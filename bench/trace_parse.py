"""How fast access logs parse into a trace: lines per second for each format the replay reads.

Writes (once, into ``--cache-dir``) one log per format with ``--lines`` lines of package
downloads from many clients, each line as its writer makes it: the mirror's ``mirror-json`` and
``combined`` lines through the access log's own formatters, with pip's full User-Agent (JSON,
so full of quotes to escape), and nginx's ``combined`` lines from the synthetic trace writer.
Then :class:`~pypimirror.trace.TraceReader` reads each file ``--runs`` times with the default
bots; the best run counts.

Target: 10 million lines in well under 5 minutes, i.e. each format at 66,667 lines/s or more
(10 M lines in 150 s). Exit status: 0 when every format meets it, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic_index import synthetic_project_names, write_synthetic_index, zipf_popularity
from packaging.utils import canonicalize_name

from pypimirror.accesslog import AccessEntry, format_combined, format_mirror_json
from pypimirror.config import VotesConfig
from pypimirror.pagescan import scan_listed_files
from pypimirror.synthtrace import write_synthetic_trace
from pypimirror.trace import TraceReader

TARGET_LINES_PER_S = 10_000_000 / 150
START = 1_767_225_600  # 2026-01-01T00:00:00Z
PIP_USER_AGENT = (
    'pip/24.2 {"ci":null,"cpu":"x86_64","distro":{"id":"jammy","libc":{"lib":"glibc","version":"2.35"},'
    '"name":"Ubuntu","version":"22.04"},"implementation":{"name":"CPython","version":"3.12.4"},'
    '"installer":{"name":"pip","version":"24.2"},"openssl_version":"OpenSSL 3.0.2 15 Mar 2022",'
    '"python":"3.12.4","rustc_version":"1.79.0","setuptools_version":"70.1.0",'
    '"system":{"name":"Linux","release":"5.15.0-113-generic"}}'
)


def write_mirror_log(path: Path, lines: int, paths: list[str], formatter: Callable[[AccessEntry], str]) -> None:
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as handle:
        chunk: list[str] = []
        for index in range(lines):
            entry = AccessEntry(
                method="GET",
                path=f"/pypi/packages/{rng.choice(paths)}",
                status=302,
                bytes_sent=0,
                duration_s=0.001,
                client_ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                user_agent=PIP_USER_AGENT,
                referer="",
                proxied=False,
                time=START + index // 4,
            )
            chunk.append(formatter(entry) + "\n")
            if len(chunk) == 10_000:
                handle.write("".join(chunk))
                chunk.clear()
        handle.write("".join(chunk))


def prepare(cache_dir: Path, lines: int) -> dict[str, Path]:
    logs = {
        "mirror-json": cache_dir / f"mirror-json-{lines}.log",
        "mirror combined": cache_dir / f"mirror-combined-{lines}.log",
        "nginx combined": cache_dir / f"nginx-combined-{lines}.log",
    }
    if all(path.exists() for path in logs.values()):
        return logs
    repo = cache_dir / "repo"
    names = synthetic_project_names(500)
    if not (repo / "simple").exists():
        write_synthetic_index(repo, names, seed=1)
    listed = scan_listed_files(repo, "/pypi")
    paths = sorted(listed)
    print(f"writing {lines:,} lines per format into {cache_dir} ...", flush=True)
    write_mirror_log(logs["mirror-json"], lines, paths, format_mirror_json)
    write_mirror_log(logs["mirror combined"], lines, paths, format_combined)
    popularity = {canonicalize_name(name): count for name, count in zipf_popularity(names).items()}
    write_synthetic_trace(logs["nginx combined"], listed=listed, popularity=popularity, days=30, requests=lines, seed=1)
    return logs


def measure(path: Path, runs: int) -> tuple[float, int]:
    best = float("inf")
    requests = 0
    for _ in range(runs):
        reader = TraceReader([path], bots=VotesConfig().bots)
        started = time.perf_counter()
        requests = sum(1 for _ in reader)
        best = min(best, time.perf_counter() - started)
        if reader.stats.skipped_lines:
            raise SystemExit(f"{path}: {reader.stats.skipped_lines} lines did not parse")
    return best, requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/pypimirror-bench-trace"))
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    logs = prepare(args.cache_dir, args.lines)
    passed = True
    print(f"{'format':<16} {'lines/s':>10} {'10M lines':>10}  target >= {TARGET_LINES_PER_S:,.0f} lines/s")
    for name, path in logs.items():
        seconds, requests = measure(path, args.runs)
        rate = args.lines / seconds
        verdict = "PASS" if rate >= TARGET_LINES_PER_S else "FAIL"
        passed &= verdict == "PASS"
        print(f"{name:<16} {rate:>10,.0f} {10_000_000 / rate:>9.0f}s  {verdict} ({requests:,} requests)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
