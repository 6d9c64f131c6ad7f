"""Shared by the job tests: the mirror's own SQLite database under ``tmp_path/repo``, where the jobs
(and a ``serve`` or ``sync`` subprocess on the same config) expect it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pypimirror.db import Database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    (tmp_path / "repo").mkdir()
    db = Database.open(f"sqlite:///{tmp_path / 'repo' / 'pypi-mirror.db'}")
    yield db
    db.dispose()
