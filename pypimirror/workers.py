"""A small pre-fork supervisor: N worker processes, restarted when they crash, stopped together.

Why not Tornado's ``fork_processes``: it restarts children without back-off, exits the parent
with ``sys.exit`` on a child's signal, and forwards no signal to the children. Here the parent
forks ``count`` children, each running ``child_main(index)``, then only supervises:

* SIGTERM and SIGINT are forwarded to every child (a second one too: it cuts their grace
  period short); the parent then waits for all of them and returns 0 when every one exited
  with 0, else 1. SIGUSR1 (reopen the access log) is forwarded as it is.
* A child that exits while no stop was asked for is restarted in the same slot, after 1 s,
  doubling per further crash up to 30 s; a child that ran for a minute before crashing starts
  over at 1 s. A child exiting with :data:`EXIT_START_FAILED` could not start (a bad
  setting, not bad luck): the others are stopped and the parent returns that status.

The parent waits for signals with ``sigtimedwait`` on a blocked mask, so no signal slips
between two checks, and starts no thread. Children inherit that mask: ``child_main`` starts
with :data:`SUPERVISED_SIGNALS` blocked and must unblock them (:func:`unblock_signals`) once it
has installed its own handlers; a signal that arrived meanwhile is then delivered, not lost.
Slot 0 is the primary worker: the one that hosts work that must run once per node (the
embedded scheduler).
"""

from __future__ import annotations

__all__ = ["EXIT_START_FAILED", "SUPERVISED_SIGNALS", "run_workers", "unblock_signals"]

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: What a child returns when it cannot start at all; the supervisor then gives up.
EXIT_START_FAILED = 2
#: Blocked in the parent (and so, at first, in every child).
SUPERVISED_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD})

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_FIRST_DELAY_S = 1.0
_MAX_DELAY_S = 30.0
# A child that lived this long before crashing is restarted after the first delay again.
_STABLE_AFTER_S = 60.0
# How often the parent looks around when nothing happens (signals wake it at once).
_IDLE_WAIT_S = 5.0


def unblock_signals() -> None:
    """Let :data:`SUPERVISED_SIGNALS` through again (in a child, after its handlers are installed)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISED_SIGNALS)


@dataclass(slots=True)
class _Slot:
    index: int
    pid: int | None = None
    started_at: float = 0.0
    crashes: int = 0
    restart_at: float | None = None
    exit_code: int | None = None


def run_workers(
    count: int,
    child_main: Callable[[int], int],
    *,
    on_child_exit: Callable[[int], None] = lambda pid: None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``count`` children of ``child_main`` until they are stopped; the parent's exit status.

    ``on_child_exit(pid)`` runs for every child reaped.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED_SIGNALS)
    try:
        return _Supervisor(count, child_main, on_child_exit, clock).run()
    finally:
        _discard_pending_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)


class _Supervisor:
    def __init__(
        self,
        count: int,
        child_main: Callable[[int], int],
        on_child_exit: Callable[[int], None],
        clock: Callable[[], float],
    ) -> None:
        self._slots = [_Slot(index) for index in range(count)]
        self._child_main = child_main
        self._on_child_exit = on_child_exit
        self._clock = clock
        self._stopping = False
        self._failed_start = False

    def run(self) -> int:
        for slot in self._slots:
            self._spawn(slot)
        while self._live_pids() or self._restart_pending():
            info = signal.sigtimedwait(SUPERVISED_SIGNALS, self._wait_time())
            if info is not None and info.si_signo != signal.SIGCHLD:
                self._on_signal(signal.Signals(info.si_signo))
            self._reap()
            self._restart_due()
        if self._failed_start:
            return EXIT_START_FAILED
        clean = all(slot.exit_code == 0 for slot in self._slots if slot.exit_code is not None)
        logger.info("all %d workers stopped%s", len(self._slots), "" if clean else " (some with errors)")
        return 0 if clean else 1

    def _spawn(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.exit_code = None
        slot.started_at = self._clock()
        pid = os.fork()
        if pid == 0:  # the child: it never returns into the parent's code
            os._exit(_run_child(self._child_main, slot.index))
        slot.pid = pid
        logger.info("started worker %d (pid %d)", slot.index, pid)

    def _on_signal(self, signum: signal.Signals) -> None:
        if signum in _STOP_SIGNALS:
            if not self._stopping:
                logger.info("received %s: stopping %d workers", signum.name, len(self._live_pids()))
                self._begin_stop()
            else:
                logger.info("received %s again: passing it on", signum.name)
        self._send(signum)

    def _begin_stop(self) -> None:
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None

    def _send(self, signum: signal.Signals) -> None:
        for pid in self._live_pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # exited meanwhile; reaped next

    def _live_pids(self) -> list[int]:
        return [slot.pid for slot in self._slots if slot.pid is not None]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_child_exit(pid)
            slot = next((slot for slot in self._slots if slot.pid == pid), None)
            if slot is not None:
                self._on_exit(slot, os.waitstatus_to_exitcode(status))

    def _on_exit(self, slot: _Slot, code: int) -> None:
        pid, slot.pid, slot.exit_code = slot.pid, None, code
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        if self._stopping:
            (logger.info if code == 0 else logger.warning)("worker %d (pid %s) %s", slot.index, pid, how)
            return
        if code == EXIT_START_FAILED:
            logger.error("worker %d (pid %s) could not start; stopping the others", slot.index, pid)
            self._failed_start = True
            self._begin_stop()
            self._send(signal.SIGTERM)
            return
        if self._clock() - slot.started_at >= _STABLE_AFTER_S:
            slot.crashes = 0
        delay = min(_FIRST_DELAY_S * 2**slot.crashes, _MAX_DELAY_S)
        slot.crashes += 1
        slot.restart_at = self._clock() + delay
        logger.error("worker %d (pid %s) %s unexpectedly; restarting it in %.0f s", slot.index, pid, how, delay)

    def _restart_pending(self) -> bool:
        return any(slot.restart_at is not None for slot in self._slots)

    def _restart_due(self) -> None:
        now = self._clock()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    def _wait_time(self) -> float:
        pending = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        if not pending:
            return _IDLE_WAIT_S
        return max(0.0, min(pending) - self._clock())


def _run_child(child_main: Callable[[int], int], index: int) -> int:
    """The whole life of a child: ``child_main``'s status, 1 for anything it let escape."""
    code = 1
    try:
        code = child_main(index)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the process boundary: a crash is logged here, then restarted
        logger.exception("worker %d crashed", index)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _discard_pending_signals() -> None:
    """Take signals that arrived after the last child ended, so unblocking them does not kill us."""
    while signal.sigtimedwait(SUPERVISED_SIGNALS, 0) is not None:
        pass
