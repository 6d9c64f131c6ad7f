"""pypimirror: a partial PyPI mirror that serves the whole index and stores the popular files."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
