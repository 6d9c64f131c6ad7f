"""Downloads per project from a CSV: the popularity a synthetic trace is drawn by.

Public download statistics come as CSV exports of varying shape (a header or none, columns
named ``project``/``download_count`` or ``name``/``downloads``, in either order). The reader is
lenient about that shape and strict about the values: a count that is not a whole number, or a
project listed twice, names its line instead of being guessed at.
"""

from __future__ import annotations

__all__ = ["read_popularity_csv"]

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name

from pypimirror.errors import TraceInputError

logger = logging.getLogger(__name__)


def read_popularity_csv(path: Path) -> dict[NormalizedName, int]:
    """Downloads per project from a ``project,downloads`` CSV (blocking).

    A first line whose second field is not a number is a header: its columns are found by name
    (a name with ``project``, ``name`` or ``package``; one with ``download`` or ``count``), else
    the first two are taken. Every other line must hold a project name and a whole number of
    downloads (``0`` or more) in those columns; a bad line, or a project listed twice (after
    name normalization), raises :class:`~pypimirror.errors.TraceInputError` naming the line.
    """
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceInputError(source, f"cannot read the popularity list: {exc}") from exc
    name_column, count_column = 0, 1
    first_data = 0
    if rows and (len(rows[0]) < 2 or not rows[0][1].strip().isdigit()):
        name_column, count_column = _header_columns(source, rows[0])
        first_data = 1
    popularity: dict[NormalizedName, int] = {}
    seen_at: dict[NormalizedName, int] = {}
    for line_number, row in enumerate(rows[first_data:], start=first_data + 1):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{source}: line {line_number}"
        if len(row) <= max(name_column, count_column):
            raise TraceInputError(where, f"expected at least {max(name_column, count_column) + 1} columns, got {row!r}")
        name, count = row[name_column].strip(), row[count_column].strip()
        if not name:
            raise TraceInputError(where, "the project name is empty")
        if not count.isascii() or not count.isdigit():
            raise TraceInputError(where, f"downloads {count!r} is not a whole number")
        normalized = canonicalize_name(name)
        if normalized in seen_at:
            raise TraceInputError(where, f"project {name!r} is listed again (first on line {seen_at[normalized]})")
        seen_at[normalized] = line_number
        popularity[normalized] = int(count)
    return popularity


def _header_columns(source: str, header: Sequence[str]) -> tuple[int, int]:
    """(name column, downloads column) from a header line's names."""
    lowered = [cell.strip().lower() for cell in header]
    name = next((i for i, cell in enumerate(lowered) if any(w in cell for w in ("project", "name", "package"))), None)
    count = next((i for i, cell in enumerate(lowered) if any(w in cell for w in ("download", "count"))), None)
    if name is None and count is None and len(header) >= 2:
        return 0, 1
    if name is None or count is None or name == count:
        raise TraceInputError(f"{source}: line 1", f"cannot tell the project and download columns in {list(header)!r}")
    return name, count
