from __future__ import annotations

import pytest

from pypimirror.byteunits import format_bytes

GiB = 1024**3


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (3 * 1024**2, "3.0 MiB"),
        (5 * GiB, "5.0 GiB"),
        (3 * 1024 * GiB, "3.0 TiB"),
        (2 * 1024**5, "2.0 PiB"),
        (-1536, "-1.5 KiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
