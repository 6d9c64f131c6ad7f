"""Narrowing a version pin to the files a given set of platforms and Python versions can install.

Why: ``name==version`` without hashes names every file of a release, often dozens of wheels for
platforms nobody here uses. Given ``--platform`` tags and ``--python`` versions, the wheels kept
are those whose tags such an interpreter accepts (as ``packaging.tags`` computes them, a newer
manylinux/musllinux/macOS accepting older builds); sdists are always kept, since any platform
can build them. Without a platform or a Python, that side is not narrowed. Markers are judged the
same way: a pin is dropped only when no requested Python on no requested platform would install it.
"""

from __future__ import annotations

__all__ = [
    "marker_may_apply",
    "parse_platforms",
    "parse_pythons",
    "select_files_for_pin",
]

import functools
import re
from collections.abc import Iterable, Sequence

from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.version import InvalidVersion, Version

from .distfilename import parse_dist_filename
from .errors import PinTargetError
from .lockmodel import VersionPin

_PYTHON = re.compile(r"^3\.(\d{1,2})$")
_PLATFORM = re.compile(r"^[a-z0-9_]+$")
_GLIBC_TAG = re.compile(r"^(manylinux|musllinux)_(\d+)_(\d+)_(\w+)$")
_MAC_TAG = re.compile(r"^macosx_(\d+)_(\d+)_(\w+)$")
# The legacy manylinux names and the glibc version each stands for.
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}

# (sys_platform, platform_system, os_name, platform_machine) of the environments a marker is
# tried in when no platform is given: the ones wheels are commonly built for.
_Env = tuple[str, str, str, str]
_COMMON_ENVS: tuple[_Env, ...] = (
    ("linux", "Linux", "posix", "x86_64"),
    ("linux", "Linux", "posix", "aarch64"),
    ("darwin", "Darwin", "posix", "arm64"),
    ("darwin", "Darwin", "posix", "x86_64"),
    ("win32", "Windows", "nt", "AMD64"),
    ("win32", "Windows", "nt", "ARM64"),
)
_WINDOWS_MACHINES = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}


def parse_pythons(values: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``("3.12", "3.11")`` → ``((3, 12), (3, 11))``; anything but ``3.N`` is a ``PinTargetError``."""
    parsed: list[tuple[int, int]] = []
    for value in values:
        match = _PYTHON.match(value.strip())
        if match is None:
            raise PinTargetError(value, "not a Python version like 3.12")
        parsed.append((3, int(match.group(1))))
    return tuple(parsed)


def parse_platforms(values: Sequence[str]) -> tuple[str, ...]:
    """Platform tags as wheels spell them (``manylinux_2_28_x86_64``, ``win_amd64``, ...)."""
    for value in values:
        if not _PLATFORM.match(value):
            raise PinTargetError(value, "not a platform tag like manylinux_2_28_x86_64 or win_amd64")
    return tuple(values)


def _accepted_platforms(platform: str) -> tuple[str, ...]:
    """The platform tags an installer on ``platform`` accepts, the platform itself first."""
    glibc = _GLIBC_TAG.match(platform)
    if glibc is not None:
        family, major, minor, arch = glibc.group(1), int(glibc.group(2)), int(glibc.group(3)), glibc.group(4)
        accepted = [f"{family}_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
        if family == "manylinux":
            accepted += [f"{legacy}_{arch}" for legacy, (lmajor, lminor) in _LEGACY_MANYLINUX.items()
                         if (lmajor, lminor) <= (major, minor)]
        return tuple(accepted)
    mac = _MAC_TAG.match(platform)
    if mac is not None:
        return tuple(mac_platforms((int(mac.group(1)), int(mac.group(2))), mac.group(3)))
    return (platform,)


@functools.lru_cache(maxsize=256)
def _supported_tags(python: tuple[int, int], platforms: tuple[str, ...]) -> frozenset[Tag]:
    interpreter = f"cp{python[0]}{python[1]}"
    return frozenset(cpython_tags(python, platforms=platforms)) | frozenset(
        compatible_tags(python, interpreter, platforms=platforms))


def _is_wheel_wanted(tags: frozenset[Tag], platforms: tuple[str, ...], pythons: tuple[tuple[int, int], ...]) -> bool:
    accepted = tuple(p for platform in platforms for p in _accepted_platforms(platform))
    for tag in tags:
        if accepted and tag.platform != "any" and tag.platform not in accepted:
            continue
        if not pythons:
            return True
        # Without requested platforms, judge the Python part on the wheel's own platform.
        candidate_platforms = accepted or (tag.platform,)
        if any(tag in _supported_tags(python, candidate_platforms) for python in pythons):
            return True
    return False


def select_files_for_pin(
    pin: VersionPin,
    files: Iterable[tuple[str, str]],
    platforms: Sequence[str] = (),
    pythons: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The ``(filename, sha256)`` of ``files`` that ``pin`` needs, in the order given.

    ``files`` are a project page's files; those of other projects or versions, and names that
    are neither a wheel nor an sdist, are left out, as is everything for a version that is not
    PEP 440 (the requirements reader reports such a pin). Raises ``PinTargetError`` for a malformed
    platform or Python.
    """
    wanted_platforms = parse_platforms(platforms)
    wanted_pythons = parse_pythons(pythons)
    try:
        pinned = Version(pin.version)
    except InvalidVersion:
        return []  # packaging parses no filename with such a version either: nothing can match
    chosen: list[tuple[str, str]] = []
    for filename, sha256 in files:
        parsed = parse_dist_filename(filename)
        if parsed is None or parsed.project != pin.project or parsed.version != pinned:
            continue
        if parsed.tags is None or _is_wheel_wanted(parsed.tags, wanted_platforms, wanted_pythons):
            chosen.append((filename, sha256))
    return chosen


def _linux_arch(platform: str) -> str | None:
    """The machine of a Linux platform tag (``manylinux_2_17_aarch64`` → ``aarch64``), else None."""
    glibc = _GLIBC_TAG.match(platform)
    if glibc is not None:
        return glibc.group(4)
    for prefix in ("linux", *_LEGACY_MANYLINUX):
        if platform.startswith(prefix + "_"):
            return platform.removeprefix(prefix + "_")
    return None


def _environments(platforms: tuple[str, ...]) -> tuple[_Env, ...]:
    if not platforms:
        return _COMMON_ENVS
    envs: list[_Env] = []
    for platform in platforms:
        linux_arch = _linux_arch(platform)
        mac = _MAC_TAG.match(platform)
        if linux_arch is not None:
            envs.append(("linux", "Linux", "posix", linux_arch))
        elif mac is not None:
            arches = ("arm64", "x86_64") if mac.group(3) == "universal2" else (mac.group(3),)
            envs.extend(("darwin", "Darwin", "posix", arch) for arch in arches)
        elif platform in _WINDOWS_MACHINES:
            envs.append(("win32", "Windows", "nt", _WINDOWS_MACHINES[platform]))
        else:
            return _COMMON_ENVS  # a platform we cannot describe: do not narrow by it
    return tuple(envs)


def marker_may_apply(marker: str, platforms: Sequence[str] = (), pythons: Sequence[str] = ()) -> bool:
    """Whether ``marker`` holds for some requested Python on some requested platform.

    With no Python given, the marker is kept whatever it says: narrowing is asked for, not
    guessed. Raises ``InvalidMarker`` for a marker that does not parse.
    """
    parsed = Marker(marker)
    wanted_pythons = parse_pythons(pythons)
    if not wanted_pythons:
        return True
    for python in wanted_pythons:
        for sys_platform, system, os_name, machine in _environments(parse_platforms(platforms)):
            environment = {
                "python_version": f"{python[0]}.{python[1]}",
                "python_full_version": f"{python[0]}.{python[1]}.0",
                "implementation_name": "cpython",
                "platform_python_implementation": "CPython",
                "sys_platform": sys_platform,
                "platform_system": system,
                "os_name": os_name,
                "platform_machine": machine,
                "platform_release": "",
                "platform_version": "",
                "implementation_version": f"{python[0]}.{python[1]}.0",
                "extra": "",
            }
            if parsed.evaluate(environment):
                return True
    return False

