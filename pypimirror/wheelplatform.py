"""Which clients a wheel serves: its platforms by family and architecture, and Python versions.

A synthetic client is a platform (``manylinux-x86_64``, ``macos-arm64``, ...) and a CPython
version; a resolver installs the wheel built most specifically for it. The tags come from the
file name through ``packaging``; this module only groups platform tags into the families a
platform mix is stated in, and rates how well a tag fits a Python version.
"""

from __future__ import annotations

__all__ = ["PLATFORM_CLASSES", "parse_python_version", "platform_classes", "python_fit", "tag_platform_classes"]

import logging

from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

logger = logging.getLogger(__name__)

#: The client platforms a mix can name (``any``, a pure wheel's class, is not a client).
PLATFORM_CLASSES = (
    "manylinux-x86_64",
    "manylinux-aarch64",
    "musllinux-x86_64",
    "musllinux-aarch64",
    "macos-arm64",
    "macos-x86_64",
    "windows-amd64",
    "windows-x86",
)


def platform_classes(filename: str) -> frozenset[str]:
    """The client platforms (of :data:`PLATFORM_CLASSES`) a wheel installs on.

    ``any`` stands for a pure-Python wheel (every platform); an unknown platform gives none.
    """
    _, _, _, tags = parse_wheel_filename(filename)
    classes: set[str] = set()
    for tag in tags:
        classes.update(tag_platform_classes(tag.platform))
    return frozenset(classes)


def tag_platform_classes(platform: str) -> tuple[str, ...]:
    """The classes of one platform tag: ``universal2`` is both macOS ones, ``linux_*`` counts as manylinux."""
    if platform == "any":
        return ("any",)
    for system, family in (("manylinux", "manylinux"), ("linux", "manylinux"), ("musllinux", "musllinux")):
        if platform.startswith(system):
            for arch in ("x86_64", "aarch64"):
                if platform.endswith(arch):
                    return (f"{family}-{arch}",)
            return ()
    if platform.startswith("macosx"):
        if platform.endswith("universal2"):
            return ("macos-arm64", "macos-x86_64")
        if platform.endswith("arm64"):
            return ("macos-arm64",)
        if platform.endswith(("x86_64", "intel")):
            return ("macos-x86_64",)
        return ()
    return {"win_amd64": ("windows-amd64",), "win32": ("windows-x86",)}.get(platform, ())


def parse_python_version(text: str) -> tuple[int, int]:
    """``"3.12"`` as ``(3, 12)``; ValueError for anything else."""
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise ValueError(f"python_mix: {text!r} is not a Python version such as '3.12'")
    return int(major), int(minor)


def python_fit(tag: Tag, python: tuple[int, int]) -> int:
    """How well ``tag`` fits CPython ``python``: 3 built for it, 2 abi3, 1 pure, 0 not at all."""
    interpreter, abi = tag.interpreter, tag.abi
    major, minor = python
    if interpreter.startswith("cp") and interpreter[2:].isdigit():
        built = (int(interpreter[2]), int(interpreter[3:] or 0))
        if abi == "abi3":
            return 2 if built[0] == major and built[1] <= minor else 0
        return 3 if built == python else 0
    if interpreter.startswith("py") and interpreter[2:].isdigit() and abi == "none":
        digits = interpreter[2:]
        if int(digits[0]) != major:
            return 0
        return 1 if len(digits) == 1 or int(digits[1:]) <= minor else 0
    return 0
