"""Narrowing a version pin to the files of requested platforms and Pythons: tables over real wheel names."""

from __future__ import annotations

import pytest
from packaging.markers import InvalidMarker
from packaging.utils import canonicalize_name

from pypimirror.errors import PinTargetError
from pypimirror.lockmodel import VersionPin
from pypimirror.pinselect import select_files_for_pin
from pypimirror.pinselect import marker_may_apply, parse_platforms, parse_pythons

PIN = VersionPin(canonicalize_name("foo"), "2.0", None, "requirements.txt: line 1")
SDISTS = ["foo-2.0.tar.gz", "foo-2.0.zip"]
ANY = ["foo-2.0-py3-none-any.whl", "foo-2.0-py2.py3-none-any.whl"]
# A page's files, as a project with compiled wheels lists them (plus neighbours that never match).
PAGE = [
    *SDISTS,
    *ANY,
    "foo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "foo-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "foo-2.0-cp312-cp312-manylinux_2_34_x86_64.whl",
    "foo-2.0-cp312-cp312-musllinux_1_2_x86_64.whl",
    "foo-2.0-cp312-cp312-manylinux_2_34_aarch64.whl",
    "foo-2.0-cp312-cp312-win_amd64.whl",
    "foo-2.0-cp311-cp311-win_amd64.whl",
    "foo-2.0-cp312-cp312-macosx_11_0_arm64.whl",
    "foo-2.0-cp310-abi3-macosx_10_9_universal2.whl",
    "foo-2.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
    "foo-2.0-cp27-cp27mu-manylinux1_x86_64.whl",
    "foo-1.0-py3-none-any.whl",
    "foo-1.0.tar.gz",
    "bar-2.0-py3-none-any.whl",
    "foo-2.0.win-amd64.exe",
    "foo-2.0-py3.12.egg",
]
FILES = [(name, f"{i:064x}") for i, name in enumerate(PAGE)]
FOO_2 = [name for name in PAGE[:15]]


@pytest.mark.parametrize(("platforms", "pythons", "expected"), [
    pytest.param([], [], FOO_2, id="no-narrowing-every-file-of-the-version"),
    pytest.param([], ["3.12"], [*SDISTS, *ANY,
                               "foo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                               "foo-2.0-cp312-cp312-manylinux_2_34_x86_64.whl",
                               "foo-2.0-cp312-cp312-musllinux_1_2_x86_64.whl",
                               "foo-2.0-cp312-cp312-manylinux_2_34_aarch64.whl",
                               "foo-2.0-cp312-cp312-win_amd64.whl",
                               "foo-2.0-cp312-cp312-macosx_11_0_arm64.whl",
                               "foo-2.0-cp310-abi3-macosx_10_9_universal2.whl"], id="python-only"),
    pytest.param(["manylinux_2_28_x86_64"], [], [*SDISTS, *ANY,
                                                "foo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                                                "foo-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                                                "foo-2.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
                                                "foo-2.0-cp27-cp27mu-manylinux1_x86_64.whl"], id="platform-only"),
    pytest.param(["manylinux_2_28_x86_64"], ["3.12"], [*SDISTS, *ANY,
                                                      "foo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"],
                 id="older-glibc-accepted-newer-refused"),
    pytest.param(["manylinux_2_34_x86_64"], ["3.12"], [*SDISTS, *ANY,
                                                      "foo-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                                                      "foo-2.0-cp312-cp312-manylinux_2_34_x86_64.whl"],
                 id="newest-glibc-takes-both"),
    pytest.param(["musllinux_1_2_x86_64"], ["3.12"], [*SDISTS, *ANY, "foo-2.0-cp312-cp312-musllinux_1_2_x86_64.whl"],
                 id="musllinux"),
    pytest.param(["macosx_14_0_arm64"], ["3.12"], [*SDISTS, *ANY, "foo-2.0-cp312-cp312-macosx_11_0_arm64.whl",
                                                  "foo-2.0-cp310-abi3-macosx_10_9_universal2.whl"],
                 id="macos-arm-takes-universal2-and-abi3"),
    pytest.param(["win_amd64"], ["3.11", "3.12"], [*SDISTS, *ANY, "foo-2.0-cp312-cp312-win_amd64.whl",
                                                   "foo-2.0-cp311-cp311-win_amd64.whl"], id="two-pythons"),
    pytest.param(["win_amd64", "manylinux2014_aarch64"], ["3.11"],
                 [*SDISTS, *ANY, "foo-2.0-cp311-cp311-win_amd64.whl"], id="two-platforms-one-has-nothing"),
    pytest.param(["win_arm64"], ["3.13"], [*SDISTS, *ANY], id="nothing-compiled-fits-sdists-and-pure-wheels-do"),
])
def test_select_files_for_pin(platforms: list[str], pythons: list[str], expected: list[str]) -> None:
    chosen = select_files_for_pin(PIN, FILES, platforms, pythons)
    assert [name for name, _ in chosen] == [name for name in PAGE if name in expected]
    assert all(sha == dict(FILES)[name] for name, sha in chosen)


def test_pin_versions_compare_as_versions_and_a_legacy_version_matches_nothing() -> None:
    files = [("foo-2.0.0-py3-none-any.whl", "1" * 64), ("foo-2.0-py3-none-any.whl", "2" * 64),
             ("foo-2.0rc1.tar.gz", "3" * 64)]
    assert select_files_for_pin(VersionPin(canonicalize_name("foo"), "2", None, "x"), files) == files[:2]
    legacy = [("foo-2004d.tar.gz", "4" * 64), ("foo-2004.tar.gz", "5" * 64)]
    assert select_files_for_pin(VersionPin(canonicalize_name("foo"), "2004d", None, "x"), legacy) == []


@pytest.mark.parametrize(("pythons", "platforms", "bad"), [
    (["3"], [], "'3': not a Python version like 3.12"),
    (["3.12.1"], [], "'3.12.1': not a Python version like 3.12"),
    (["2.7"], [], "'2.7': not a Python version like 3.12"),
    ([], ["Linux x86_64"], "'Linux x86_64': not a platform tag like manylinux_2_28_x86_64 or win_amd64"),
    ([], ["manylinux-2-28"], "'manylinux-2-28': not a platform tag like manylinux_2_28_x86_64 or win_amd64"),
])
def test_malformed_targets_are_refused_by_name(pythons: list[str], platforms: list[str], bad: str) -> None:
    with pytest.raises(PinTargetError) as caught:
        select_files_for_pin(PIN, FILES, platforms, pythons)
    assert str(caught.value) == bad


def test_targets_parse() -> None:
    assert parse_pythons([" 3.9", "3.13"]) == ((3, 9), (3, 13))
    assert parse_platforms(["win_amd64", "linux_armv7l"]) == ("win_amd64", "linux_armv7l")


@pytest.mark.parametrize(("marker", "platforms", "pythons", "applies"), [
    ('python_version < "3.12"', [], [], True),  # nothing requested: nothing judged
    ('python_version < "3.12"', [], ["3.12"], False),
    ('python_version < "3.12"', [], ["3.12", "3.11"], True),
    ('python_full_version >= "3.11.1"', [], ["3.11"], False),  # X.Y means X.Y.0
    ('sys_platform == "win32"', [], ["3.12"], True),  # no platform given: any common one may apply
    ('sys_platform == "win32"', ["manylinux_2_17_x86_64"], ["3.12"], False),
    ('sys_platform == "win32" and platform_machine == "ARM64"', ["win_amd64"], ["3.12"], False),
    ('sys_platform == "win32" and platform_machine == "ARM64"', ["win_arm64"], ["3.12"], True),
    ('platform_machine == "aarch64"', ["manylinux2014_aarch64"], ["3.12"], True),
    ('platform_machine == "aarch64"', ["linux_x86_64"], ["3.12"], False),
    ('platform_machine == "x86_64"', ["macosx_11_0_universal2"], ["3.12"], True),
    ('platform_system == "Darwin"', ["some_future_platform"], ["3.12"], True),  # unknown: not narrowed
    ('implementation_name == "pypy"', [], ["3.12"], False),
    ('extra == "docs"', [], ["3.12"], False),
])
def test_marker_may_apply(marker: str, platforms: list[str], pythons: list[str], applies: bool) -> None:
    assert marker_may_apply(marker, platforms, pythons) is applies


def test_bad_marker_raises_packagings_error() -> None:
    with pytest.raises(InvalidMarker):
        marker_may_apply('python_version <<< "3"', [], ["3.12"])
