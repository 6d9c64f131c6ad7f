"""A real SOCKS5 proxy (pproxy) on 127.0.0.1 for tests of ``upstream.proxy``.

It runs in its own process and logs every connection it carries (``-v``, unbuffered) to a file, never to a
pipe nobody reads (which could fill and stall it). Usage (a fixture is
``yield from running_socks_proxy(tmp_path)``)::

    proxy.url          # socks5h://127.0.0.1:PORT, for upstream.proxy
    proxy.log()        # what it carried so far
    proxy.stop()       # later connections through it fail; returns the log
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SocksProxy", "running_socks_proxy"]

_START_TIMEOUT_S = 15


@dataclass
class SocksProxy:
    """A running pproxy: where it listens and where it logs."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        """``socks5h``, so the proxy resolves host names."""
        return f"socks5h://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> str:
        """Stop the proxy and return its log."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        return self.log()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_socks_proxy(directory: Path) -> Iterator[SocksProxy]:
    """Generator for a pytest fixture: a started proxy logging into ``directory``, stopped afterwards."""
    port = _free_port()
    log_path = directory / "pproxy.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-u", "-m", "pproxy", "-l", f"socks5://127.0.0.1:{port}", "-v"],
                                   stdout=log, stderr=subprocess.STDOUT)
    proxy = SocksProxy(port, process, log_path)
    try:
        _wait_listening(proxy)
        yield proxy
    finally:
        proxy.stop()


def _wait_listening(proxy: SocksProxy) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"pproxy exited: {proxy.log()}")
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pproxy did not listen on {proxy.port} within {_START_TIMEOUT_S}s")
