"""Build OSV exports for tests: records in the OSV schema, written as a zip or a directory.

The records name projects of the fake upstream, so a test can sync both and see which of its
files an advisory reaches.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

MODIFIED = "2026-01-02T03:04:05Z"


def record(
    advisory_id: str,
    package: str,
    *,
    ranges: Sequence[Mapping[str, str]] = (),
    versions: Sequence[str] = (),
    aliases: Sequence[str] = (),
    summary: str | None = None,
    modified: str = MODIFIED,
    withdrawn: str | None = None,
    ecosystem: str = "PyPI",
    severity: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """One OSV record about one package; ``ranges`` are the events of one ECOSYSTEM range."""
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": package}}
    if ranges:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": [dict(event) for event in ranges]}]
    if versions:
        affected["versions"] = list(versions)
    data: dict[str, Any] = {
        "schema_version": "1.6.0",
        "id": advisory_id,
        "modified": modified,
        "published": "2025-12-01T00:00:00Z",
        "aliases": list(aliases),
        "summary": summary if summary is not None else f"{advisory_id} in {package}",
        "details": f"Details of {advisory_id}.",
        "affected": [affected],
    }
    if withdrawn is not None:
        data["withdrawn"] = withdrawn
    if severity:
        data["severity"] = [dict(entry) for entry in severity]
    return data


def write_zip(path: Path, records: Iterable[Mapping[str, Any]], *, extra: Mapping[str, bytes] | None = None) -> Path:
    """A zip like OSV's per-ecosystem export: one ``<id>.json`` per record (plus raw ``extra`` members)."""
    with zipfile.ZipFile(path, "w") as archive:
        for item in records:
            archive.writestr(f"{item['id']}.json", json.dumps(item))
        for name, body in (extra or {}).items():
            archive.writestr(name, body)
    return path


def write_tree(root: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """A directory laid out like the PyPA advisory database: ``vulns/<package>/<id>.yaml``."""
    for item in records:
        folder = root / "vulns" / item["affected"][0]["package"]["name"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{item['id']}.yaml").write_text(yaml.safe_dump(dict(item), sort_keys=False))
    return root
