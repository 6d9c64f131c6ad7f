"""A stored-pages repository of realistic shape, for the simulator's tests and benchmark.

The replay and the synthetic traces read file sizes, versions and upload times from a mirror's
stored ``index.v1_json`` pages. This helper writes such pages for any list of project names,
through the mirror's own page model and renderer (so they are byte for byte what an index sync
stores), with:

* versions per project drawn heavy-tailed (most have a handful, some dozens), released over
  ``history_days`` before ``end_time``; a share of the projects (``recent_release_share``)
  releases its newest version in the last ``recent_days``, so a trace ending at ``end_time``
  sees releases happen; the most popular projects (the first names) have more releases,
  release more recently and ship binary and huge wheels more often;
* pure-Python projects (one ``py3-none-any`` wheel and an sdist per version) and binary ones
  (CPython wheels for five consecutive Python versions, by the release's age, on up to six
  platforms, some built as ``abi3``, and an sdist);
* sizes heavy-tailed: a lognormal size per project, most wheels 10 KB-2 MB, and a few projects
  (``huge_share``) with wheels of 50-500 MB, as machine-learning libraries have.

Everything is drawn from ``random.Random(seed)``: the same arguments write the same bytes.
Test and bench helper only, never imported by the package.
"""

from __future__ import annotations

__all__ = [
    "SyntheticIndex",
    "popularity_csv_text",
    "synthetic_project_names",
    "write_synthetic_index",
    "zipf_popularity",
]

import functools
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name

from pypimirror.pages import DistFile, ProjectPage, render_project_html, render_project_json, rewrite_file_url
from pypimirror.storage import RepoLayout, atomic_write

PACKAGES_URL = "https://files.example.org/packages"
DAY_S = 86_400
# 2026-01-01T00:00:00Z: a fixed default, so a default call is deterministic.
DEFAULT_END_TIME = 1_767_225_600.0
# Newest first: a release supports five Python versions by its age (see _python_tags).
_PYTHON_TAGS = ("cp313", "cp312", "cp311", "cp310", "cp39", "cp38", "cp37", "cp36")
# (platform tag, the oldest release age in years that still has a wheel for it: older releases
# ship fewer platforms, as real projects added arm64 and musllinux late).
_PLATFORMS = (
    ("manylinux_2_17_x86_64.manylinux2014_x86_64", 99),
    ("win_amd64", 99),
    ("macosx_10_9_x86_64", 99),
    ("macosx_11_0_arm64", 3),
    ("manylinux_2_17_aarch64.manylinux2014_aarch64", 3),
    ("musllinux_1_2_x86_64", 2),
)
_KB = 1024
_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SyntheticIndex:
    """What :func:`write_synthetic_index` wrote."""

    projects: tuple[NormalizedName, ...]
    files: int
    total_bytes: int


def synthetic_project_names(count: int) -> list[str]:
    """``count`` distinct project names, ``proj-00001`` onwards (for a popularity CSV too)."""
    return [f"proj-{index:05d}" for index in range(1, count + 1)]


def zipf_popularity(names: Sequence[str], *, top_downloads: int = 10_000_000, exponent: float = 1.0) -> dict[str, int]:
    """Downloads per project falling as rank^-exponent, the first name the most popular.

    With exponent 1.0 over 15,000 projects the top 100 take about 51 % of downloads and the
    top 1,000 about 73 % (a real top list is steeper past the first thousand; use one where
    the figures matter).
    """
    return {name: max(1, int(top_downloads / (rank**exponent))) for rank, name in enumerate(names, start=1)}


def write_synthetic_index(
    repo_path: Path,
    names: Sequence[str],
    *,
    seed: int = 0,
    prefix: str = "/pypi",
    end_time: float = DEFAULT_END_TIME,
    history_days: int = 3 * 365,
    recent_days: int = 30,
    recent_release_share: float = 0.3,
    median_versions: float = 6.0,
    max_versions: int = 40,
    binary_share: float = 0.3,
    abi3_share: float = 0.2,
    huge_share: float = 0.01,
    popular_count: int = 1000,
    popular_median_versions: float = 25.0,
    popular_recent_release_share: float = 0.7,
    popular_binary_share: float = 0.4,
    popular_huge_share: float = 0.04,
    write_html: bool = False,
) -> SyntheticIndex:
    """Write one stored ``index.v1_json`` page per name under ``repo_path/simple/``.

    ``names`` come most popular first (as a popularity list orders them): the first
    ``popular_count`` get the ``popular_*`` shape, since the projects most downloaded are also
    the ones that release most often, have the longest histories and ship the biggest binary
    wheels (GPU and machine-learning libraries are among them). File URLs point at this
    mirror's ``{prefix}/packages/`` as after a sync. ``write_html`` also writes the two HTML
    variants (only a server needs them; the scans read the JSON). Names are normalized;
    duplicates after normalization are written once.
    """
    rng = random.Random(seed)
    layout = RepoLayout(repo_path)
    url_for = functools.partial(rewrite_file_url, packages_url=PACKAGES_URL, prefix=prefix)
    written: list[NormalizedName] = []
    files = total = 0
    seen: set[NormalizedName] = set()
    for raw_name in names:
        name = canonicalize_name(raw_name)
        if name in seen:
            continue
        seen.add(name)
        popular = len(seen) <= popular_count
        page = _project_page(
            rng,
            name,
            end_time=end_time,
            history_s=history_days * DAY_S,
            recent_s=recent_days * DAY_S,
            recent_release_share=popular_recent_release_share if popular else recent_release_share,
            median_versions=popular_median_versions if popular else median_versions,
            max_versions=max_versions,
            binary=rng.random() < (popular_binary_share if popular else binary_share),
            abi3=rng.random() < abi3_share,
            huge=rng.random() < (popular_huge_share if popular else huge_share),
        )
        atomic_write(layout.project_page(name, "index.v1_json"), render_project_json(page, url_for=url_for))
        if write_html:
            html = render_project_html(page, url_for=url_for, repository_meta=True)
            atomic_write(layout.project_page(name, "index.html"), html)
            atomic_write(layout.project_page(name, "index.v1_html"), html)
        written.append(name)
        files += len(page.files)
        total += sum(f.size for f in page.files)
    return SyntheticIndex(tuple(written), files, total)


def _project_page(
    rng: random.Random,
    name: NormalizedName,
    *,
    end_time: float,
    history_s: int,
    recent_s: int,
    recent_release_share: float,
    median_versions: float,
    max_versions: int,
    binary: bool,
    abi3: bool,
    huge: bool,
) -> ProjectPage:
    count = min(max_versions, max(1, round(rng.lognormvariate(math.log(median_versions), 0.9))))
    newest = end_time - (rng.uniform(0, recent_s) if rng.random() < recent_release_share else rng.uniform(recent_s, history_s / 3))
    oldest = newest - rng.uniform(0.2, 1.0) * (history_s - (end_time - newest)) if count > 1 else newest
    times = sorted([oldest, newest] + [rng.uniform(oldest, newest) for _ in range(count - 2)])[:count]
    # Most wheels 10 KB-2 MB: pure ones around 100 KB, compiled ones around 700 KB with a tail
    # into tens of MB (numerical libraries); a huge project's in the 50-500 MB range.
    median = 700 * _KB if binary else 100 * _KB
    base = rng.uniform(50 * _MB, 500 * _MB) if huge else min(40 * _MB, max(10 * _KB, rng.lognormvariate(math.log(median), 1.3)))
    files: list[DistFile] = []
    major, minor = rng.randint(0, 3), 0
    dist_name = name.replace("-", "_")
    for index, uploaded in enumerate(times):
        if index and rng.random() < 0.15:
            major, minor = major + 1, 0
        elif index:
            minor += 1
        version = f"{major}.{minor}.0"
        age_years = (end_time - uploaded) / (365 * DAY_S)
        filenames = [f"{dist_name}-{version}.tar.gz"]
        if binary:
            pythons = ("cp39",) if abi3 else _python_tags(age_years)
            abi = "abi3" if abi3 else None
            for platform, years in _PLATFORMS:
                if age_years <= years:
                    filenames += [f"{dist_name}-{version}-{py}-{abi or py}-{platform}.whl" for py in pythons]
        else:
            filenames.append(f"{dist_name}-{version}-py3-none-any.whl")
        for filename in filenames:
            is_wheel = filename.endswith(".whl")
            size = int(base * rng.uniform(0.8, 1.25) * (1.0 if is_wheel else rng.uniform(0.3, 1.5)))
            files.append(_dist_file(rng, filename, version, max(size, 1024), uploaded, is_wheel))
    versions = tuple(f.version for f in files if f.version is not None)
    return ProjectPage(name=name, display_name=name, last_serial=rng.randint(1, 10**8), files=tuple(files), versions=versions)


def _python_tags(age_years: float) -> tuple[str, ...]:
    """Five consecutive CPython versions, one older per year of the release's age."""
    start = min(int(age_years), len(_PYTHON_TAGS) - 5)
    return _PYTHON_TAGS[start : start + 5]


def _dist_file(rng: random.Random, filename: str, version: str, size: int, uploaded: float, is_wheel: bool) -> DistFile:
    digest = f"{rng.getrandbits(256):064x}"
    hash_dir = f"{rng.getrandbits(256):064x}"
    url = f"{PACKAGES_URL}/{hash_dir[:2]}/{hash_dir[2:4]}/{hash_dir[4:]}/{filename}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(uploaded)) + f".{int(uploaded % 1 * 1e6):06d}Z"
    return DistFile(
        filename=filename,
        url=url,
        sha256=digest,
        requires_python=None,
        size=size,
        upload_time=stamp,
        yanked=False,
        core_metadata=f"{rng.getrandbits(256):064x}" if is_wheel else False,
        provenance=None,
        version=version,
    )


def popularity_csv_text(popularity: Mapping[str, int], *, header: str = "project,download_count") -> str:
    """``popularity`` as a CSV a synthetic trace reads (a header line, then ``name,downloads``)."""
    return header + "\n" + "".join(f"{name},{downloads}\n" for name, downloads in popularity.items())
