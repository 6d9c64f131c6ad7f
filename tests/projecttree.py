"""A realistic dependency tree on the fake upstream: an application with 18 locked dependencies.

Why: a lockfile of two packages does not show that a pinned set holds *everything* an installer
needs. This tree has what real projects have: chains several levels deep, a package several
others depend on, older versions a constraint rules out, a marker that holds here, and sdists
beside the wheels of some packages. Every package has a pure-Python wheel, so installers never
need a build backend (which the fake upstream does not serve).

Each call takes a ``prefix``, so several trees with disjoint files live on one fake index: a test
that pins one tree's lockfile cannot pass thanks to another tree's set.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakedists import BuiltDist, dist_name
from fakeindex import FakeIndex

__all__ = ["ProjectTree", "add_project_tree"]

# (name suffix, versions, dependencies with "{p}" for the prefix, has an sdist).
# The resolver picks the newest version every constraint allows; _LOCKED records which that is.
_PACKAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], bool], ...] = (
    ("web", ("1.0", "2.0", "2.1"), ("{p}-http>=1.2", "{p}-templates", "{p}-config"), True),
    ("http", ("1.4",), ("{p}-urls", "{p}-certs", "{p}-charset<1"), False),
    ("urls", ("3.0",), ("{p}-idna>=1",), False),
    ("idna", ("1.2",), (), True),
    ("certs", ("2024.1",), (), False),
    ("charset", ("0.8", "0.9", "1.0"), (), False),
    ("templates", ("3.1",), ("{p}-markup>=2",), True),
    ("markup", ("2.0",), (), False),
    ("config", ("1.0",), ("{p}-yamlish", "{p}-typing"), False),
    ("yamlish", ("6.0",), (), False),
    ("typing", ("4.10", "4.11", "4.12"), (), True),
    ("cli", ("8.1",), ('{p}-colors; python_version >= "3.8"',), False),
    ("colors", ("0.4",), (), False),
    ("log", ("0.7",), ("{p}-typing>=4.11",), False),
    ("retry", ("9.0",), ("{p}-clock",), False),
    ("clock", ("1.0",), (), False),
    ("db", ("2.0",), ("{p}-pool",), False),
    ("pool", ("1.1",), ("{p}-typing",), False),
)
_LOCKED = {"charset": "0.9"}  # "<1" rules out 1.0; every other package locks its newest version
_DIRECT = ("web", "cli", "log", "retry", "db")


@dataclass(frozen=True)
class ProjectTree:
    """What a correct lock of the tree holds, to compare against what installers fetch."""

    prefix: str
    """The start of every project name of the tree."""
    requirements: tuple[str, ...]
    """The application's direct dependencies, as a ``pyproject.toml`` or ``requirements.in`` lists them."""
    locked: dict[str, str]
    """Every package of the resolved tree (18) and its version."""
    package_files: dict[str, tuple[BuiltDist, ...]]
    """The files of each package's locked version: what a lockfile with hashes lists."""

    @property
    def files(self) -> tuple[BuiltDist, ...]:
        return tuple(dist for files in self.package_files.values() for dist in files)

    def owns(self, filename: str) -> bool:
        """Whether ``filename`` (of any version, or its ``.metadata``) is one of the tree's projects'."""
        return filename.startswith(dist_name(self.prefix) + "_")

    @property
    def wheels(self) -> tuple[BuiltDist, ...]:
        """The files an installer downloads (one pure-Python wheel per package)."""
        return tuple(dist for dist in self.files if dist.filename.endswith(".whl"))


def add_project_tree(fake: FakeIndex, prefix: str) -> ProjectTree:
    """Publish the tree's 18 projects as ``{prefix}-web``, ``{prefix}-http``, … on ``fake``."""
    locked: dict[str, str] = {}
    for suffix, versions, dependencies, sdist in _PACKAGES:
        name = f"{prefix}-{suffix}"
        fake.add_project(name, versions, sdist=sdist, dependencies=[d.format(p=prefix) for d in dependencies])
        locked[name] = _LOCKED.get(suffix, versions[-1])
    package_files = {name: fake.files(name, version) for name, version in locked.items()}
    return ProjectTree(prefix, tuple(f"{prefix}-{suffix}" for suffix in _DIRECT), locked, package_files)
