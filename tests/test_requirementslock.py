"""Reading requirements files as locks: pins, hashes, markers, includes, options and what is refused."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pypimirror.lockfiles import read_lockfile
from pypimirror.lockmodel import FileEntry, Lockfile, VersionPin

SAMPLES = Path(__file__).parent / "data" / "lockfiles"
SHA_A = "a" * 64
SHA_B = "b" * 64


def read(tmp_path: Path, text: str, name: str = "requirements.txt", *, platforms: Sequence[str] = (),
         pythons: Sequence[str] = ()) -> Lockfile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_lockfile(path, platforms=platforms, pythons=pythons)


def summary(lockfile: Lockfile) -> list[tuple[str, str | None, str | None]]:
    """(project, version, sha256 or 'pin' or the marker of a pin) per entry, in order."""
    rows: list[tuple[str, str | None, str | None]] = []
    for entry in lockfile.entries:
        if isinstance(entry, FileEntry):
            rows.append((entry.project, entry.version, entry.sha256))
        else:
            rows.append((entry.project, entry.version, entry.marker or "pin"))
    return rows


def problems(lockfile: Lockfile) -> list[str]:
    return [f"{p.where}: {p.reason}" for p in lockfile.problems]


def test_real_uv_pip_compile_output_gives_two_hashed_files_per_pin() -> None:
    lockfile = read_lockfile(SAMPLES / "requirements.txt")
    assert lockfile.kind == "requirements.txt"
    assert [(p, v) for p, v, _ in summary(lockfile)] == [
        ("pkg-a", "1.0"), ("pkg-a", "1.0"), ("pkg-b", "2.0"), ("pkg-b", "2.0"), ("pkg-c", "1.5"), ("pkg-c", "1.5"),
        ("pkg-d", "0.3"), ("pkg-d", "0.3"), ("pkg-e", "4.1"), ("pkg-e", "4.1")]
    assert all(isinstance(e, FileEntry) and e.filename is None and e.url is None for e in lockfile.entries)
    assert (lockfile.problems, lockfile.skipped, lockfile.notes) == ((), (), ())
    assert lockfile.entries[4].where == f"{SAMPLES / 'requirements.txt'}: line 9"


CASES = [
    pytest.param("Foo_Bar==1.0\n", [("foo-bar", "1.0", "pin")], [], id="plain-pin-normalized"),
    pytest.param("foo[extra]==1.0 # pinned by hand\n\n# a comment\n", [("foo", "1.0", "pin")], [],
                 id="extras-and-comments"),
    pytest.param(f"foo==1.0 --hash=sha256:{SHA_A.upper()} --hash sha256:{SHA_B}\n",
                 [("foo", "1.0", SHA_A), ("foo", "1.0", SHA_B)], [], id="hashes-on-one-line-both-spellings"),
    pytest.param(f"foo==1.0 \\\n  --hash=sha256:{SHA_A} \\\n  # via bar\n",
                 [("foo", "1.0", SHA_A)], [], id="continuation-ending-in-a-comment"),
    pytest.param(f"foo==1.0 \\\n  --hash=sha256:{SHA_A} \\\n",
                 [("foo", "1.0", SHA_A)], [], id="continuation-on-the-last-line"),
    pytest.param(f"foo==1.0 --hash=sha256:{SHA_A} --hash=sha512:{'c' * 128}\n",
                 [("foo", "1.0", SHA_A)], [], id="other-algorithms-beside-sha256-are-dropped"),
    pytest.param("foo===1.0.post1\nbar===2004d\n", [("foo", "1.0.post1", "pin")],
                 ["line 2: '2004d' is not a standard (PEP 440) version: no file can be matched to it"],
                 id="arbitrary-equality"),
    pytest.param('foo==1.0 ; python_version < "3.12"\n', [("foo", "1.0", 'python_version < "3.12"')], [],
                 id="marker-kept-unevaluated"),
    pytest.param("foo>=1.0\nbar~=2.0\nbaz\nqux==1.*\nquux==1.0,!=1.1\n", [],
                 ["line 1: 'foo>=1.0' is not pinned to one version with ==",
                  "line 2: 'bar~=2.0' is not pinned to one version with ==",
                  "line 3: 'baz' is not pinned to one version with ==",
                  "line 4: 'qux==1.*' is not pinned to one version with ==",
                  "line 5: 'quux==1.0,!=1.1' is not pinned to one version with =="],
                 id="loose-pins-are-errors-with-their-line"),
    pytest.param(f"ok==1\nfoo==1.0 --hash=md5:{'c' * 32}\nbar==2 --hash=sha256:xyz\nbaz==3 --hash=nothing\n",
                 [("ok", "1", "pin")],
                 ["line 2: only md5 hashes; files are identified by sha256",
                  "line 3: --hash 'sha256:xyz' is not a sha256 digest (64 hex digits)",
                  "line 4: --hash 'nothing' is not algorithm:digest"],
                 id="unknown-or-malformed-hashes"),
    pytest.param("--hash=sha256:" + SHA_A + "\n--frobnicate\n-r\n", [],
                 ["line 1: --hash without a requirement before it", "line 2: unknown option '--frobnicate'",
                  "line 3: -r needs a file name"],
                 id="stray-and-unknown-options"),
]


@pytest.mark.parametrize(("text", "entries", "errors"), CASES)
def test_requirements_lines(tmp_path: Path, text: str, entries: list[tuple[str, str, str]], errors: list[str]) -> None:
    lockfile = read(tmp_path, text)
    assert (summary(lockfile), problems(lockfile)) == (entries, errors)


def test_unparsable_lines_are_reported_on_one_line_each_with_packagings_reason(tmp_path: Path) -> None:
    lockfile = read(tmp_path, "ok==1\nfoo==1.0 (\nfoo=1.0\n")
    assert summary(lockfile) == [("ok", "1", "pin")]
    reported = problems(lockfile)
    assert [r.split(": Expected", 1)[0] for r in reported] == [
        "line 2: cannot parse requirement 'foo==1.0 ('", "line 3: cannot parse requirement 'foo=1.0'"]
    assert all("\n" not in r for r in reported)


def test_index_and_install_options_are_ignored_with_a_note(tmp_path: Path) -> None:
    lockfile = read(tmp_path, "--index-url https://example.org/simple\n-i https://example.org/simple\n"
                              "--extra-index-url=https://example.org/other\n--find-links ./wheels\n--no-index\n"
                              "--trusted-host example.org\n--only-binary :all:\n--require-hashes\nfoo==1\n")
    assert summary(lockfile) == [("foo", "1", "pin")]
    assert problems(lockfile) == []
    assert [n.split(": ", 2)[1:] for n in lockfile.notes] == [
        ["line 1", "--index-url ignored: files are identified by name and sha256, whichever index lists them"],
        ["line 2", "-i ignored: files are identified by name and sha256, whichever index lists them"],
        ["line 3", "--extra-index-url ignored: files are identified by name and sha256, whichever index lists them"],
        ["line 4", "--find-links ignored: files are identified by name and sha256, whichever index lists them"],
        ["line 5", "--no-index ignored: files are identified by name and sha256, whichever index lists them"],
        ["line 6", "--trusted-host ignored: files are identified by name and sha256, whichever index lists them"],
        ["line 7", "--only-binary ignored: it changes nothing about which files are pinned"],
        ["line 8", "--require-hashes ignored: it changes nothing about which files are pinned"],
    ]


def test_editable_url_and_path_requirements_are_skipped_with_a_reason(tmp_path: Path) -> None:
    lockfile = read(tmp_path, "-e ./lib\n--editable=git+https://example.org/x.git#egg=x\n"
                              "foo @ https://example.org/foo-1.0.tar.gz\n./dist/bar-1.0-py3-none-any.whl\n"
                              "https://example.org/baz-1.0.zip\nok==1\n")
    assert summary(lockfile) == [("ok", "1", "pin")]
    assert [(s.project, s.reason, s.where.rsplit(": ", 1)[1]) for s in lockfile.skipped] == [
        (None, "editable './lib': a local checkout, not an index file", "line 1"),
        (None, "editable 'git+https://example.org/x.git#egg=x': a local checkout, not an index file", "line 2"),
        ("foo", "a direct URL (https://example.org/foo-1.0.tar.gz), not an index file", "line 3"),
        (None, "'./dist/bar-1.0-py3-none-any.whl' is a path or URL, not an index project", "line 4"),
        (None, "'https://example.org/baz-1.0.zip' is a path or URL, not an index project", "line 5"),
    ]
    assert problems(lockfile) == []


def test_includes_resolve_relative_to_the_including_file_and_are_read_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.txt").write_text("base==1\n-r common.txt\n", encoding="utf-8")
    (tmp_path / "sub" / "common.txt").write_text(f"common==2 --hash=sha256:{SHA_A}\n", encoding="utf-8")
    lockfile = read(tmp_path, "-r sub/base.txt\n--requirement=sub/common.txt\ntop==3\n")
    assert summary(lockfile) == [("base", "1", "pin"), ("common", "2", SHA_A), ("top", "3", "pin")]
    assert lockfile.entries[1].where == f"{tmp_path / 'sub' / 'common.txt'}: line 1"
    assert problems(lockfile) == []


def test_include_cycle_is_reported_and_every_pin_still_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a==1\n-r b.txt\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("b==1\n-r a.txt\n", encoding="utf-8")
    lockfile = read_lockfile(tmp_path / "a.txt")
    assert summary(lockfile) == [("a", "1", "pin"), ("b", "1", "pin")]
    assert [str(p) for p in lockfile.problems] == [f"{tmp_path / 'b.txt'}: line 2: include cycle: a.txt -> b.txt -> a.txt"]


def test_self_include_missing_include_and_url_include_are_problems(tmp_path: Path) -> None:
    lockfile = read(tmp_path, "-r requirements.txt\n-r missing.txt\n-c https://example.org/c.txt\nfoo==1\n")
    assert summary(lockfile) == [("foo", "1", "pin")]
    assert problems(lockfile) == [
        "line 1: include cycle: requirements.txt -> requirements.txt",
        "line 2: include 'missing.txt': cannot read: No such file or directory",
        "line 3: include 'https://example.org/c.txt' is a URL; only local files are read",
    ]


def test_constraints_limit_versions_but_pin_nothing(tmp_path: Path) -> None:
    (tmp_path / "constraints.txt").write_text("foo==1.0\nbar>=2\n", encoding="utf-8")
    lockfile = read(tmp_path, "-c constraints.txt\nbaz==3\n")
    assert summary(lockfile) == [("baz", "3", "pin")]
    assert [(s.project, s.reason) for s in lockfile.skipped] == [
        ("foo", "in a constraints file: it limits versions, installs nothing"),
        ("bar", "in a constraints file: it limits versions, installs nothing")]


@pytest.mark.parametrize(("narrow", "kept"), [
    ({}, ["all", "old", "win", "mac-old"]),
    ({"pythons": ["3.12"]}, ["all", "win", "mac-old"]),
    ({"pythons": ["3.11", "3.12"]}, ["all", "old", "win", "mac-old"]),
    ({"pythons": ["3.12"], "platforms": ["manylinux_2_28_x86_64"]}, ["all"]),
    ({"pythons": ["3.10"], "platforms": ["macosx_14_0_arm64"]}, ["all", "old", "mac-old"]),
    ({"pythons": ["3.12"], "platforms": ["win_amd64", "manylinux2014_aarch64"]}, ["all", "win"]),
    ({"platforms": ["win_amd64"]}, ["all", "old", "win", "mac-old"]),  # no Python given: markers not judged
])
def test_markers_are_judged_for_each_requested_python_and_platform(tmp_path: Path, narrow: dict[str, list[str]],
                                                                    kept: list[str]) -> None:
    lockfile = read(tmp_path, 'all==1\nold==1 ; python_version < "3.12"\nwin==1 ; sys_platform == "win32"\n'
                              'mac-old==1 ; platform_system == "Darwin" or python_version < "3.11"\n'
                              "also-win==1 ; os_name == 'nt' and platform_machine == 'ARM64'\n",
                    platforms=narrow.get("platforms", ()), pythons=narrow.get("pythons", ()))
    expected = kept + (["also-win"] if not narrow.get("pythons") or not narrow.get("platforms") else [])
    assert [e.project for e in lockfile.entries] == expected
    assert all(isinstance(e, VersionPin) for e in lockfile.entries)
    assert len(lockfile.skipped) == 5 - len(expected)


def test_real_sample_narrowed_to_python_312_on_linux_drops_the_marked_pins() -> None:
    lockfile = read_lockfile(SAMPLES / "requirements.txt", pythons=["3.12"], platforms=["manylinux_2_17_x86_64"])
    assert sorted({e.project for e in lockfile.entries}) == ["pkg-a", "pkg-b", "pkg-d"]
    assert [s.reason for s in lockfile.skipped] == [
        "marker 'python_full_version < \"3.12\"' excludes every requested Python/platform",
        "marker 'sys_platform == \"win32\"' excludes every requested Python/platform"]


def test_a_file_with_requirement_lines_under_any_name_is_read_as_requirements(tmp_path: Path) -> None:
    lockfile = read(tmp_path, f"foo==1.0 --hash=sha256:{SHA_A}\n", name="frozen-deps")
    assert (lockfile.kind, summary(lockfile)) == ("requirements.txt", [("foo", "1.0", SHA_A)])


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_bytes(b"\xef\xbb\xbffoo==1.0\n")
    assert summary(read_lockfile(path)) == [("foo", "1.0", "pin")]
