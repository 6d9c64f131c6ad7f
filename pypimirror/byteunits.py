"""Byte counts as people read them: the one formatter of the info page, ``status`` and the cache plan.

A figure shown in two places (a tier's fill on the info page and in ``pypimirror status``) must
read the same in both, so there is one function for it.
"""

from __future__ import annotations

__all__ = ["format_bytes"]

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1, with one decimal.

    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(512)
    '512 B'
    """
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS[:-1]:
        value /= 1024
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} {_UNITS[-1]}"
