"""The metrics API, read back through prometheus-client's own parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pypimirror.acceptor import ConnectionStats
from pypimirror.buffers import BufferStats
from pypimirror.queries import JobRun
from pypimirror.metrics import CONTENT_TYPE, Metrics
from pypimirror.pagecache import PageCacheStats
from pypimirror.status import JobStatus, MirrorStatus, TierFill
from pypimirror.votes import VoteStats

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def vote_stats(**counts: int) -> VoteStats:
    fields = dict.fromkeys(("offered", "queued", "bots", "dropped", "written", "deduplicated", "db_errors",
                            "discarded", "queue_depth"), 0)
    return VoteStats(**{**fields, **counts})


def run(job: str, started: float, finished: float | None, outcome: str | None, run_id: int = 1) -> JobRun:
    return JobRun(run_id, job, "node", started, finished, outcome, {}, None)  # type: ignore[arg-type]


def test_the_content_type_is_the_prometheus_text_format():
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_requests_are_counted_by_route_and_status_with_their_body_bytes():
    metrics = Metrics()
    metrics.observe_request("simple_project", 200, 6000, None)
    metrics.observe_request("simple_project", 200, 4000, None)
    metrics.observe_request("simple_project", 304, 0, None)
    found = samples(metrics.render())
    assert value(found, "pypimirror_http_requests_total", route="simple_project", status="200") == 2
    assert value(found, "pypimirror_http_requests_total", route="simple_project", status="304") == 1
    assert value(found, "pypimirror_http_response_bytes_total", route="simple_project") == 10000


@pytest.mark.parametrize(("kind", "body_bytes"), [("local", 2048), ("proxied", 4096), ("redirected", 0)])
def test_package_files_are_counted_by_how_they_were_answered(kind, body_bytes):
    metrics = Metrics()
    metrics.observe_request("package_file", 302 if kind == "redirected" else 200, body_bytes, kind)
    found = samples(metrics.render())
    assert value(found, "pypimirror_package_responses_total", kind=kind) == 1
    assert found.get(("pypimirror_package_bytes_total", (("kind", kind),)), 0) == body_bytes


def test_upstream_errors_are_counted_by_reason():
    metrics = Metrics()
    metrics.observe_upstream_error("unavailable")
    metrics.observe_upstream_error("unavailable")
    metrics.observe_upstream_error("status")
    found = samples(metrics.render())
    assert value(found, "pypimirror_upstream_errors_total", reason="unavailable") == 2
    assert value(found, "pypimirror_upstream_errors_total", reason="status") == 1


def test_refresh_follows_the_vote_and_page_cache_counters():
    metrics = Metrics()
    metrics.refresh(votes=vote_stats(offered=5, dropped=1, written=3, queue_depth=4),
                    pages=PageCacheStats(hits=10, misses=2, evictions=0, entries=2, bytes=12000))
    metrics.refresh(votes=vote_stats(offered=8, dropped=1, written=6, queue_depth=0),
                    pages=PageCacheStats(hits=15, misses=3, evictions=1, entries=1, bytes=6000))
    found = samples(metrics.render())
    assert value(found, "pypimirror_votes_offered_total") == 8
    assert value(found, "pypimirror_votes_dropped_total") == 1
    assert value(found, "pypimirror_votes_written_total") == 6
    assert value(found, "pypimirror_vote_queue_depth") == 0
    assert value(found, "pypimirror_page_cache_hits_total") == 15
    assert value(found, "pypimirror_page_cache_misses_total") == 3
    assert value(found, "pypimirror_page_cache_evictions_total") == 1
    assert value(found, "pypimirror_page_cache_bytes") == 6000


def test_refresh_follows_the_connection_counts_and_the_buffer_budget():
    metrics = Metrics()
    metrics.refresh(votes=None, pages=None, connections=ConnectionStats(limit=500, open=40, refused=3, accept_errors=0),
                    buffers=BufferStats(limit=256 * 2**20, in_use=2**20, squeezed=0))
    metrics.refresh(votes=None, pages=None, connections=ConnectionStats(limit=500, open=12, refused=7, accept_errors=2),
                    buffers=BufferStats(limit=256 * 2**20, in_use=3 * 2**20, squeezed=5))
    found = samples(metrics.render())
    assert value(found, "pypimirror_connections_open") == 12
    assert value(found, "pypimirror_connections_limit") == 500
    assert value(found, "pypimirror_connections_refused_total") == 7
    assert value(found, "pypimirror_accept_errors_total") == 2
    assert value(found, "pypimirror_buffer_bytes") == 3 * 2**20
    assert value(found, "pypimirror_buffer_budget_bytes") == 256 * 2**20
    assert value(found, "pypimirror_buffer_budget_squeezed_total") == 5


def test_votes_over_a_networks_share_and_for_unlisted_files_are_counted_apart_from_a_full_queue():
    metrics = Metrics()
    metrics.refresh(votes=vote_stats(offered=10, dropped=1, over_share=3, unlisted=2), pages=None)
    found = samples(metrics.render())
    assert value(found, "pypimirror_votes_dropped_total") == 1
    assert value(found, "pypimirror_votes_over_network_share_total") == 3
    assert value(found, "pypimirror_votes_unlisted_total") == 2


def test_the_status_adds_job_history_and_tier_fill():
    ok = run("index_sync", 1000.0, 1060.0, "ok", 1)
    failed = run("index_sync", 2000.0, 2030.0, "failed", 2)
    running = run("cache", 3000.0, None, None, 4)
    earlier_cache = run("cache", 2500.0, 2600.0, "ok", 3)
    status = MirrorStatus(
        jobs=(JobStatus("index_sync", failed, failed, ok, 1),
              JobStatus("cache", running, earlier_cache, earlier_cache, 0)),
        tiers=(TierFill(0, 3, 3000, 10000), TierFill(1, 0, 0, 50000)),
    )
    found = samples(Metrics().render(status))
    assert value(found, "pypimirror_job_last_start_timestamp_seconds", job="index_sync") == 2000.0
    assert value(found, "pypimirror_job_last_success_timestamp_seconds", job="index_sync") == 1060.0
    assert value(found, "pypimirror_job_last_duration_seconds", job="index_sync") == 30.0
    assert value(found, "pypimirror_job_failures_since_success", job="index_sync") == 1
    assert value(found, "pypimirror_job_running", job="index_sync") == 0
    assert value(found, "pypimirror_job_running", job="cache") == 1
    assert value(found, "pypimirror_job_last_duration_seconds", job="cache") == 100.0
    assert value(found, "pypimirror_cache_tier_bytes", tier="0") == 3000
    assert value(found, "pypimirror_cache_tier_files", tier="0") == 3
    assert value(found, "pypimirror_cache_tier_limit_bytes", tier="1") == 50000


def test_a_multiprocess_registry_needs_multiprocess_mode_enabled_first(tmp_path: Path):
    message = r"^enable_multiprocess\(\) must run before a multiprocess Metrics is built$"
    with pytest.raises(RuntimeError, match=message):
        Metrics(multiprocess_dir=tmp_path)


# Two forked "workers" count, one stays alive; the parent reads the sum, then marks the live one dead.
MULTIPROCESS_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from pypimirror.metrics import Metrics, enable_multiprocess, mark_process_dead
from pypimirror.pagecache import PageCacheStats

directory = Path(sys.argv[1])
enable_multiprocess(directory)
ready_read, ready_write = os.pipe()
pids = []
for requests in (3, 4):
    pid = os.fork()
    if pid == 0:
        metrics = Metrics(multiprocess_dir=directory)
        for _ in range(requests):
            metrics.observe_request("simple_project", 200, 100, None)
        metrics.refresh(votes=None, pages=PageCacheStats(hits=requests, misses=0, evictions=0, entries=1, bytes=500))
        os.write(ready_write, b"x")
        if requests == 4:
            time.sleep(60)  # the worker still alive: killed below
        os._exit(0)
    pids.append(pid)
os.read(ready_read, 1), os.read(ready_read, 1)
os.waitpid(pids[0], 0)
mark_process_dead(pids[0], directory)
sys.stdout.write(Metrics(multiprocess_dir=directory).render().decode() + "----\n")
os.kill(pids[1], 9)
os.waitpid(pids[1], 0)
mark_process_dead(pids[1], directory)
sys.stdout.write(Metrics(multiprocess_dir=directory).render().decode())
"""


def test_workers_counters_are_summed_and_a_dead_workers_gauges_leave_the_sum(tmp_path: Path):
    done = subprocess.run([sys.executable, "-P", "-c", MULTIPROCESS_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    both_alive_then_one, after_both_died = (samples(part.encode()) for part in done.stdout.split("----\n"))
    assert value(both_alive_then_one, "pypimirror_http_requests_total", route="simple_project", status="200") == 7
    assert value(both_alive_then_one, "pypimirror_page_cache_hits_total") == 7
    assert value(both_alive_then_one, "pypimirror_page_cache_bytes") == 500  # only the live worker's
    assert value(after_both_died, "pypimirror_http_requests_total", route="simple_project", status="200") == 7
    assert after_both_died.get(("pypimirror_page_cache_bytes", ()), 0) == 0


def test_downloads_are_counted_by_outcome_from_the_hit_counters_totals():
    metrics = Metrics()
    zero = samples(metrics.render())
    for outcome in ("local", "redirect", "proxy"):  # present from the first scrape
        assert value(zero, "pypimirror_file_requests_total", outcome=outcome) == 0
        assert value(zero, "pypimirror_file_bytes_total", outcome=outcome) == 0
    metrics.refresh(votes=None, pages=None, hits={"local": (3, 300), "redirect": (1, 0), "proxy": (0, 0)})
    metrics.refresh(votes=None, pages=None, hits={"local": (4, 350), "redirect": (2, 900), "proxy": (1, 7)})
    found = samples(metrics.render())
    assert value(found, "pypimirror_file_requests_total", outcome="local") == 4
    assert value(found, "pypimirror_file_bytes_total", outcome="local") == 350
    assert value(found, "pypimirror_file_requests_total", outcome="redirect") == 2
    assert value(found, "pypimirror_file_bytes_total", outcome="redirect") == 900
    assert value(found, "pypimirror_file_requests_total", outcome="proxy") == 1
