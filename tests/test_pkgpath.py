"""Package paths: only ab/cd/<hash>/<filename> passes, and lookups never leave the tiers."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from pypimirror import pkgpath
from pypimirror.errors import UnsafePathError
from pypimirror.pkgpath import PackagePath, find_in_tiers, parse_package_path

HASH = "547eb3b2ab0fe4a6c3cd61ab71a0d1d82caf1f7b25d0a1e5d9c8bfbfdf88"  # 60 hex digits, as on PyPI
WHEEL = "sampleproject-1.2.0-py2.py3-none-any.whl"
DIRS = f"30/52/{HASH}"

VALID_CASES = [
    (f"{DIRS}/{WHEEL}", f"{DIRS}/{WHEEL}", WHEEL, False),
    (f"{DIRS}/{WHEEL}.metadata", f"{DIRS}/{WHEEL}.metadata", f"{WHEEL}.metadata", True),
    ("ab/cd/ef/f.whl", "ab/cd/ef/f.whl", "f.whl", False),
    (f"{DIRS}/pkg-1.0%2Blocal.1.tar.gz", f"{DIRS}/pkg-1.0+local.1.tar.gz", "pkg-1.0+local.1.tar.gz", False),
    (f"{DIRS}/pkg-1.0%2blocal-py3-none-any.whl", f"{DIRS}/pkg-1.0+local-py3-none-any.whl",
     "pkg-1.0+local-py3-none-any.whl", False),
    (f"{DIRS}/pkg-1.0+local.tar.gz", f"{DIRS}/pkg-1.0+local.tar.gz", "pkg-1.0+local.tar.gz", False),
    (f"{DIRS}/caf%C3%A9-1.0.tar.gz", f"{DIRS}/café-1.0.tar.gz", "café-1.0.tar.gz", False),
    (f"{DIRS}/x%20y-1.0.zip", f"{DIRS}/x y-1.0.zip", "x y-1.0.zip", False),
    ("%61%62/cd/ef/f.whl", "ab/cd/ef/f.whl", "f.whl", False),
    (f"ab/cd/{'f' * 128}/f.whl", f"ab/cd/{'f' * 128}/f.whl", "f.whl", False),
    (f"ab/cd/ef/{'a' * 251}.whl", f"ab/cd/ef/{'a' * 251}.whl", f"{'a' * 251}.whl", False),
    ("ab/cd/ef/f.whl.metadata", "ab/cd/ef/f.whl.metadata", "f.whl.metadata", True),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "relpath", "filename", "is_metadata"), VALID_CASES)
def test_valid_package_path_is_decoded_once(raw: str, relpath: str, filename: str, is_metadata: bool) -> None:
    assert parse_package_path(raw) == PackagePath(relpath=relpath, filename=filename, is_metadata=is_metadata)


@pytest.mark.parametrize(
    ("raw", "dist_relpath"),
    [
        (f"{DIRS}/{WHEEL}.metadata", f"{DIRS}/{WHEEL}"),
        (f"{DIRS}/{WHEEL}", f"{DIRS}/{WHEEL}"),
        ("ab/cd/ef/f.metadata.metadata", "ab/cd/ef/f.metadata"),
    ],
)
def test_dist_relpath_drops_one_metadata_suffix(raw: str, dist_relpath: str) -> None:
    assert parse_package_path(raw).dist_relpath == dist_relpath


HOSTILE_CASES = [
    ("ab/cd/../f.whl", "has '..'"),
    ("ab/cd/ef/x..tar.gz", "has '..'"),
    ("ab/cd/%2e%2e/f.whl", "has '..'"),
    ("ab/cd/ef/%2E%2E%2Fetc", "has an encoded '/'"),
    ("ab/%2e%2e%2f%2e%2e/ef/passwd", "has an encoded '/'"),
    ("ab/cd/ef%2Fgh/f.whl", "has an encoded '/'"),
    ("ab/cd/ef/gh%2ff.whl", "has an encoded '/'"),
    ("ab%2Fcd/ef/f.whl", "has 3 segments"),
    ("ab/cd//f.whl", "has an empty segment"),
    ("ab/cd/ef/", "has an empty segment"),
    ("/ab/cd/ef", "has an empty segment"),
    ("ab/cd/ef/a\\b.whl", "has a backslash"),
    ("ab/cd/ef/a%5cb.whl", "has a backslash"),
    ("ab/cd/ef/a%5C..%5Cb", "has a backslash"),
    ("ab/cd/ef/f.whl\x00", "not visible ASCII"),
    ("ab/cd/ef/f%00.whl", "has a control character"),
    ("ab/cd/ef/f%0a.whl", "has a control character"),
    ("ab/cd/ef/f%c2%85.whl", "has a control character"),
    ("ab/cd/ef/f%7f.whl", "has a control character"),
    ("ab/cd/ef/f .whl", "not visible ASCII"),
    ("ab/cd/ef/caf\u00e9.whl", "not visible ASCII"),
    ("ab/cd/ef/f%ff.whl", "does not decode to UTF-8"),
    ("ab/cd/ef/f%c3.whl", "does not decode to UTF-8"),
    ("ab/cd/ef/%252e%252e", "has a '%' left after decoding"),
    ("ab/cd/ef/f%zz.whl", "has a '%' left after decoding"),
    ("ab/cd/ef/f%2.whl", "has a '%' left after decoding"),
    ("AB/cd/ef/f.whl", "the first directory 'AB' is not lowercase hex"),
    ("ab/CD/ef/f.whl", "the second directory 'CD' is not lowercase hex"),
    (f"ab/cd/{HASH.upper()}/f.whl", "the hash directory"),
    ("abc/cd/ef/f.whl", "the first directory 'abc'"),
    ("a/cd/ef/f.whl", "the first directory 'a'"),
    ("ab/cd/xyz/f.whl", "the hash directory 'xyz'"),
    (f"ab/cd/{'f' * 129}/f.whl", "the hash directory"),
    ("./cd/ef/f.whl", "the first directory '.'"),
    ("ab/./ef/f.whl", "the second directory '.'"),
    ("ab/cd/ef/.", "starts with '.'"),
    ("ab/cd/ef/.hidden.whl", "starts with '.'"),
    ("ab/cd/ef/%2ehidden", "starts with '.'"),
    ("ab/cd/ef/.metadata", "starts with '.'"),
    ("ab/cd/ef/-rf.whl", "starts with '-'"),
    ("ab/cd/", "has 3 segments"),
    ("ab/cd/ef", "has 3 segments"),
    ("ab/cd/ef/gh/f.whl", "has 5 segments"),
    ("", "has 1 segments"),
    ("f.whl", "has 1 segments"),
    (f"ab/cd/ef/{'a' * 252}.whl", "the file name is longer than 255 bytes"),
    (f"ab/cd/ef/{'%C3%A9' * 128}", "the file name is longer than 255 bytes"),
    (f"ab/cd/{'f' * 128}/{'a' * 1000}", "longer than 1024 bytes"),
    ("ab/cd/ef/" + "a" * 5000, "longer than 1024 bytes"),
]


@pytest.mark.parametrize(("raw", "reason"), HOSTILE_CASES)
def test_hostile_package_path_is_refused_with_its_reason(raw: str, reason: str) -> None:
    with pytest.raises(UnsafePathError) as caught:
        parse_package_path(raw)
    assert reason in caught.value.reason
    assert str(caught.value).startswith("unsafe path ")


def test_refused_path_error_shows_a_bounded_excerpt() -> None:
    raw = "ab/cd/ef/" + "a" * 5000
    with pytest.raises(UnsafePathError) as caught:
        parse_package_path(raw)
    assert caught.value.path == raw[:200] + "..."
    assert len(str(caught.value)) < 300


# --------------------------------------------------------------------------- find_in_tiers

REL = f"{DIRS}/{WHEEL}"


def put_file(root: Path, relpath: str = REL, data: bytes = b"wheel") -> Path:
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


@pytest.fixture
def tiers(tmp_path: Path) -> list[Path]:
    roots = [tmp_path / "hot", tmp_path / "warm", tmp_path / "cold"]
    for root in roots:
        root.mkdir()
    return roots


def test_find_in_tiers_returns_the_hottest_tier_holding_the_file(tiers: list[Path]) -> None:
    put_file(tiers[1], data=b"warm copy")
    put_file(tiers[2], data=b"cold copy!")
    found = find_in_tiers(tiers, parse_package_path(REL))
    assert found is not None
    index, path, file_stat = found
    assert (index, path) == (1, tiers[1] / REL)
    assert file_stat.st_size == len(b"warm copy")


def test_find_in_tiers_finds_metadata_beside_its_distribution(tiers: list[Path]) -> None:
    put_file(tiers[2], REL + ".metadata", b"Metadata-Version: 2.1\n")
    found = find_in_tiers(tiers, parse_package_path(REL + ".metadata"))
    assert found is not None and found[:2] == (2, tiers[2] / (REL + ".metadata"))
    assert find_in_tiers(tiers, parse_package_path(REL)) is None


def test_find_in_tiers_decoded_plus_name_is_found(tiers: list[Path]) -> None:
    put_file(tiers[0], f"{DIRS}/pkg-1.0+local.tar.gz")
    found = find_in_tiers(tiers, parse_package_path(f"{DIRS}/pkg-1.0%2Blocal.tar.gz"))
    assert found is not None and found[0] == 0


def test_find_in_tiers_missing_everywhere_is_none(tiers: list[Path]) -> None:
    assert find_in_tiers(tiers, parse_package_path(REL)) is None
    assert find_in_tiers([], parse_package_path(REL)) is None


def test_find_in_tiers_missing_tier_root_is_skipped(tiers: list[Path], tmp_path: Path) -> None:
    put_file(tiers[1])
    found = find_in_tiers([tmp_path / "gone", tiers[1]], parse_package_path(REL))
    assert found is not None and found[0] == 1


def test_file_symlink_inside_a_tier_is_absent(tiers: list[Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the tiers")
    link = tiers[0] / REL
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    assert find_in_tiers(tiers, parse_package_path(REL)) is None


def test_file_symlink_falls_through_to_a_colder_real_file(tiers: list[Path], tmp_path: Path) -> None:
    link = tiers[0] / REL
    link.parent.mkdir(parents=True)
    link.symlink_to(put_file(tmp_path / "elsewhere"))
    put_file(tiers[2])
    found = find_in_tiers(tiers, parse_package_path(REL))
    assert found is not None and found[:2] == (2, tiers[2] / REL)


@pytest.mark.parametrize("level", ["30", "30/52", DIRS])
def test_directory_symlink_at_any_level_inside_a_tier_is_absent(
    tiers: list[Path], tmp_path: Path, level: str
) -> None:
    outside = tmp_path / "outside"
    put_file(outside)
    link = tiers[0] / level
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / level, target_is_directory=True)
    assert (tiers[0] / REL).is_file()  # the kernel would follow it
    assert find_in_tiers(tiers, parse_package_path(REL)) is None


def test_symlinked_tier_root_is_allowed(tiers: list[Path], tmp_path: Path) -> None:
    put_file(tiers[2])
    alias = tmp_path / "alias"
    alias.symlink_to(tiers[2], target_is_directory=True)
    found = find_in_tiers([alias], parse_package_path(REL))
    assert found is not None and found[:2] == (0, alias / REL)


def test_directory_in_place_of_the_file_is_absent(tiers: list[Path]) -> None:
    (tiers[0] / REL).mkdir(parents=True)
    assert find_in_tiers(tiers, parse_package_path(REL)) is None


def test_fifo_in_place_of_the_file_is_absent(tiers: list[Path]) -> None:
    (tiers[0] / DIRS).mkdir(parents=True)
    os.mkfifo(tiers[0] / REL)
    assert find_in_tiers(tiers, parse_package_path(REL)) is None


def test_file_in_place_of_a_directory_is_absent(tiers: list[Path]) -> None:
    (tiers[0] / "30").mkdir()
    (tiers[0] / "30" / "52").write_text("not a directory")
    assert find_in_tiers(tiers, parse_package_path(REL)) is None


def test_unusable_tier_root_is_logged_and_skipped(
    tiers: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put_file(tiers[1])
    unusable = tmp_path / ("x" * 300)  # longer than any file system allows a name to be
    found = find_in_tiers([unusable, tiers[1]], parse_package_path(REL))
    assert found is not None and found[0] == 1
    assert f"cannot look up {unusable / REL}" in caplog.text


def test_symlink_loop_inside_a_tier_is_absent_without_a_warning(
    tiers: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    (tiers[0] / "30").symlink_to("30", target_is_directory=True)
    assert find_in_tiers(tiers, parse_package_path(REL)) is None
    assert caplog.text == ""


def test_plain_path_shortcut_agrees_with_the_full_check() -> None:
    """The one-regex shortcut for undecoded paths must accept exactly what the full check
    accepts unchanged: random paths over a hostile alphabet give the same answer both ways."""
    rng = random.Random(691)
    hexish, anything = "0af", "af0.-+~_%2E\\ /"
    accepted = 0
    for _ in range(20_000):
        segments = ["".join(rng.choice(hexish) for _ in range(rng.choice((1, 2, 2, 2, 3)))) for _ in range(3)]
        segments.append("".join(rng.choice(anything) for _ in range(rng.randint(0, 6))))
        raw = "/".join(segments)
        outcome = _outcome(parse_package_path, raw)
        assert outcome == _outcome(pkgpath._parse_in_full, raw), raw
        accepted += isinstance(outcome, PackagePath)
    assert accepted > 1000  # the table really exercised the shortcut


def _outcome(parse: Callable[[str], PackagePath], raw: str) -> PackagePath | str:
    try:
        return parse(raw)
    except UnsafePathError as exc:
        return exc.reason
