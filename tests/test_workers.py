"""The pre-fork supervisor, run for real in a child interpreter (forking pytest itself is unsafe).

Each worker of the script below writes a file named ``<index>-<pid>`` and appends the name of
every signal it receives, then exits on SIGTERM/SIGINT; ``behaviour`` varies one worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pypimirror.workers import run_workers

SCRIPT = r"""
import logging, os, signal, sys
from pathlib import Path
from pypimirror.workers import run_workers

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
out, behaviour = Path(sys.argv[1]), sys.argv[2]

def child(index):
    mine = out / f"{index}-{os.getpid()}"
    mine.write_text("")
    if behaviour == "cannot-start" and index == 1:
        return 2
    stops = 0
    while True:  # the supervised signals are still blocked here: wait for them synchronously
        signum = signal.sigwaitinfo({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}).si_signo
        with mine.open("a") as log:
            log.write(signal.Signals(signum).name + "\n")
        if signum == signal.SIGUSR1:
            continue
        stops += 1
        if behaviour == "needs-two-stops" and stops < 2:
            continue
        return 3 if behaviour == "fails-at-stop" and index == 0 else 0

def on_child_exit(pid):
    print("exited", pid, flush=True)

sys.exit(run_workers(2, child, on_child_exit=on_child_exit))
"""


@contextmanager
def supervisor(tmp_path: Path, behaviour: str = "plain") -> Iterator[subprocess.Popen[str]]:
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-P", "-c", SCRIPT, str(out), behaviour],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            for pid in workers(tmp_path).values():
                _kill(pid)
            process.kill()
        process.communicate()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def workers(tmp_path: Path) -> dict[int, int]:
    """index -> pid of the newest worker in each slot."""
    newest: dict[int, int] = {}
    for path in sorted((tmp_path / "out").iterdir(), key=lambda p: p.stat().st_mtime_ns):
        index, pid = path.name.split("-")
        newest[int(index)] = int(pid)
    return newest


def signals_seen(tmp_path: Path, pid: int) -> list[str]:
    (path,) = (tmp_path / "out").glob(f"*-{pid}")
    return path.read_text().split()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def is_gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_sigusr1_and_sigterm_reach_every_worker_and_a_clean_stop_exits_0(tmp_path: Path):
    with supervisor(tmp_path) as process:
        wait_for(lambda: len(workers(tmp_path)) == 2)
        pids = workers(tmp_path)
        process.send_signal(signal.SIGUSR1)
        wait_for(lambda: all(signals_seen(tmp_path, pid) == ["SIGUSR1"] for pid in pids.values()))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        stdout, stderr = process.communicate()
    assert all(signals_seen(tmp_path, pid) == ["SIGUSR1", "SIGTERM"] for pid in pids.values())
    reaped = {line for line in stdout.splitlines() if line.startswith("exited")}
    assert reaped == {f"exited {pid}" for pid in pids.values()}
    assert "all 2 workers stopped" in stderr
    assert all(is_gone(pid) for pid in pids.values())


def test_a_second_sigterm_is_passed_on_too(tmp_path: Path):
    with supervisor(tmp_path, "needs-two-stops") as process:
        wait_for(lambda: len(workers(tmp_path)) == 2)
        pids = workers(tmp_path)
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: all(signals_seen(tmp_path, pid) == ["SIGTERM"] for pid in pids.values()))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        _, stderr = process.communicate()
    assert all(signals_seen(tmp_path, pid) == ["SIGTERM", "SIGINT"] for pid in pids.values())
    assert "received SIGINT again: passing it on" in stderr


def test_a_crashed_worker_is_restarted_in_its_slot_after_a_delay(tmp_path: Path):
    with supervisor(tmp_path) as process:
        wait_for(lambda: len(workers(tmp_path)) == 2)
        before = workers(tmp_path)
        killed_at = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: workers(tmp_path)[0] != before[0])
        assert time.monotonic() - killed_at >= 0.9  # the first back-off is 1 s
        after = workers(tmp_path)
        assert after[1] == before[1] and process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        _, stderr = process.communicate()
    assert f"worker 0 (pid {before[0]}) was killed by SIGKILL unexpectedly; restarting it in 1 s" in stderr
    assert signals_seen(tmp_path, after[0]) == ["SIGTERM"]
    assert is_gone(after[0]) and is_gone(after[1])


def test_a_worker_that_cannot_start_stops_the_others_and_the_status_is_2(tmp_path: Path):
    with supervisor(tmp_path, "cannot-start") as process:
        assert process.wait(timeout=10) == 2
        _, stderr = process.communicate()
    pids = workers(tmp_path)
    assert f"worker 1 (pid {pids[1]}) could not start; stopping the others" in stderr
    assert signals_seen(tmp_path, pids[0]) == ["SIGTERM"]
    assert is_gone(pids[0])


def test_a_worker_that_fails_while_stopping_makes_the_status_1(tmp_path: Path):
    with supervisor(tmp_path, "fails-at-stop") as process:
        wait_for(lambda: len(workers(tmp_path)) == 2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 1
        _, stderr = process.communicate()
    assert f"worker 0 (pid {workers(tmp_path)[0]}) exited with 3" in stderr
    assert "all 2 workers stopped (some with errors)" in stderr


def test_zero_workers_is_refused():
    with pytest.raises(ValueError, match="^count must be at least 1, not 0$"):
        run_workers(0, lambda index: 0)
