"""Keep the developer's shell out of the tests: no proxy or PYPIMIRROR_* variable leaks in."""

from __future__ import annotations

import os

import pytest

__all__ = ["scrub_environ"]

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def scrub_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every proxy and ``PYPIMIRROR_*`` variable until ``monkeypatch`` is undone."""
    for name in list(os.environ):
        if name.lower() in _PROXY_VARIABLES or name.startswith("PYPIMIRROR_"):
            monkeypatch.delenv(name, raising=False)
