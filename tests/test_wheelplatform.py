"""Wheel platforms and Python versions, as a synthetic client picks its wheel."""

from __future__ import annotations

import pytest
from packaging.tags import Tag

from pypimirror.wheelplatform import parse_python_version, platform_classes, python_fit

MANYLINUX = "manylinux_2_17_x86_64.manylinux2014_x86_64"
AARCH64 = "manylinux_2_17_aarch64.manylinux2014_aarch64"



@pytest.mark.parametrize(
    ("filename", "classes"),
    [
        ("demo-1.0-py3-none-any.whl", {"any"}),
        (f"demo-1.0-cp312-cp312-{MANYLINUX}.whl", {"manylinux-x86_64"}),
        (f"demo-1.0-cp312-cp312-{AARCH64}.whl", {"manylinux-aarch64"}),
        ("demo-1.0-cp312-cp312-musllinux_1_2_x86_64.whl", {"musllinux-x86_64"}),
        ("demo-1.0-cp312-cp312-macosx_11_0_arm64.whl", {"macos-arm64"}),
        ("demo-1.0-cp312-cp312-macosx_10_9_universal2.whl", {"macos-arm64", "macos-x86_64"}),
        ("demo-1.0-cp312-cp312-win_amd64.whl", {"windows-amd64"}),
        ("demo-1.0-cp312-cp312-win32.whl", {"windows-x86"}),
        ("demo-1.0-cp312-cp312-linux_armv7l.whl", set()),
    ],
)
def test_wheels_are_classed_by_the_platforms_they_install_on(filename: str, classes: set[str]) -> None:
    assert platform_classes(filename) == classes


@pytest.mark.parametrize(
    ("tag", "python", "fit"),
    [
        (Tag("cp312", "cp312", "any"), (3, 12), 3),
        (Tag("cp312", "cp312", "any"), (3, 11), 0),
        (Tag("cp39", "abi3", "any"), (3, 12), 2),
        (Tag("cp39", "abi3", "any"), (3, 8), 0),
        (Tag("py3", "none", "any"), (3, 7), 1),
        (Tag("py2", "none", "any"), (3, 12), 0),
        (Tag("py310", "none", "any"), (3, 12), 1),
        (Tag("py313", "none", "any"), (3, 12), 0),
        (Tag("pp310", "pypy310_pp73", "any"), (3, 10), 0),
    ],
)
def test_tags_fit_a_python_version_best_when_built_for_it(tag: Tag, python: tuple[int, int], fit: int) -> None:
    assert python_fit(tag, python) == fit


@pytest.mark.parametrize("text", ["3", "3.x", "three.twelve", "3.12.1", ""])
def test_a_python_version_must_be_major_dot_minor(text: str) -> None:
    with pytest.raises(ValueError, match="not a Python version"):
        parse_python_version(text)
