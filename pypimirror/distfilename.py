"""What a distribution's file name says: its project, its version and, for a wheel, its tags.

Pages, pins, advisories, the listed-file index and the cache's release successors each need
some of it, for the two standard formats only (wheels, and sdists as ``.tar.gz`` or ``.zip``).
:mod:`packaging` does the parsing; this module decides, once, which names count and that a name
packaging cannot read (bad version, wrong shape, a legacy format) names nothing rather than
raising.
"""

from __future__ import annotations

__all__ = ["DistFilename", "parse_dist_filename"]

from typing import NamedTuple

from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

_SDIST_SUFFIXES = (".tar.gz", ".zip")


class DistFilename(NamedTuple):
    """A wheel's or sdist's file name, read. ``tags`` is None for an sdist."""

    project: NormalizedName
    version: Version
    tags: frozenset[Tag] | None


def parse_dist_filename(filename: str) -> DistFilename | None:
    """The project, version and tags ``filename`` names; None unless it is a wheel or sdist name
    that :mod:`packaging` reads."""
    try:
        if filename.endswith(".whl"):
            project, version, _build, tags = parse_wheel_filename(filename)
            return DistFilename(project, version, tags)
        if filename.endswith(_SDIST_SUFFIXES):
            project, version = parse_sdist_filename(filename)
            return DistFilename(project, version, None)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        pass
    return None
