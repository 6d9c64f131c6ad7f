"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from socksproxy import SocksProxy, running_socks_proxy


@pytest.fixture
def socks_proxy(tmp_path: Path) -> Iterator[SocksProxy]:
    """A real SOCKS5 proxy (pproxy) on 127.0.0.1; see ``tests/socksproxy.py``."""
    yield from running_socks_proxy(tmp_path)
