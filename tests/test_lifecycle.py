"""The stop signals shared by ``serve`` and ``sync``: real signals sent to this process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

import pytest

from pypimirror.lifecycle import StopSignals


class Clock:
    """Monotonic time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run (and handle the signal) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the signal was not handled in time"
        await asyncio.sleep(0.01)


@pytest.mark.gen_test(timeout=10)
async def test_first_signal_stops_a_repeat_at_once_is_the_same_request_a_later_one_forces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pypimirror.lifecycle")
    clock = Clock()
    signals = StopSignals(stopping="draining", forcing="giving up", clock=clock)
    loop = asyncio.get_running_loop()
    signals.install(loop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.stop.wait(), 5)
        clock.now += 0.5  # systemd's SIGTERM passed on by a supervisor: a duplicate
        os.kill(os.getpid(), signal.SIGINT)
        await until(lambda: "the same stop request" in caplog.text)
        assert not signals.forced.is_set()
        clock.now += 5.0  # an operator asking again
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.forced.wait(), 5)
    finally:
        signals.uninstall(loop)
    assert "received SIGTERM: draining" in caplog.text
    assert "received SIGINT again at once: the same stop request" in caplog.text
    assert "received SIGTERM again: giving up" in caplog.text


@pytest.mark.gen_test(timeout=10)
async def test_sigusr1_reopens_the_log_given_and_the_one_set_later() -> None:
    reopened: list[str] = []
    signals = StopSignals(stopping="s", forcing="f", reopen_log=lambda: reopened.append("first"))
    loop = asyncio.get_running_loop()
    signals.install(loop)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: reopened == ["first"])
        signals.reopen_log = lambda: reopened.append("second")
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: reopened == ["first", "second"])
    finally:
        signals.uninstall(loop)
    assert not signals.stop.is_set()


@pytest.mark.gen_test(timeout=10)
async def test_without_a_log_to_reopen_sigusr1_is_left_alone_and_uninstall_restores_every_handler() -> None:
    signals = StopSignals(stopping="s", forcing="f")
    loop = asyncio.get_running_loop()
    signals.install(loop)
    try:
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signals.uninstall(loop)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
