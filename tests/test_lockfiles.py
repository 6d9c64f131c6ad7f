"""Reading lockfiles: real samples written by uv and poetry, hand-made edge cases, the error table."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from fakeindex import FakeIndex
from installers import uv_executable
from lockfilesamples import SAMPLE_INDEX_URL, add_sample_projects, generate_samples

from pypimirror.errors import LockfileError, PinTargetError, PyPIMirrorError
from pypimirror.lockfiles import detect_kind_by_name, filename_from_location, read_lockfile
from pypimirror.lockmodel import FileEntry, Lockfile, SkippedEntry

SAMPLES = Path(__file__).parent / "data" / "lockfiles"
# What the sample project locks to (pkg-b 1.0 exists on the index but is not the newest).
LOCKED = {"pkg-a": "1.0", "pkg-b": "2.0", "pkg-c": "1.5", "pkg-d": "0.3", "pkg-e": "4.1"}


def expected_files(projects: dict[str, str] = LOCKED) -> set[tuple[str, str, str]]:
    """(project, filename, sha256) of every file of the locked releases, straight from the fake index."""
    fake = FakeIndex()  # never started: only its deterministic files are needed
    add_sample_projects(fake)
    return {(name, dist.filename, dist.sha256) for name, version in projects.items()
            for dist in fake.files(name, version)}


def file_triples(lockfile: Lockfile) -> set[tuple[str, str | None, str | None]]:
    return {(e.project, e.filename, e.sha256) for e in lockfile.entries if isinstance(e, FileEntry)}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the real samples --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["uv.lock", "pylock.toml", "poetry.lock"])
def test_real_sample_gives_every_locked_file_with_its_sha256(name: str) -> None:
    lockfile = read_lockfile(SAMPLES / name)
    assert lockfile.kind == name
    assert file_triples(lockfile) == expected_files()
    assert lockfile.problems == ()
    assert all(isinstance(e, FileEntry) and e.version == LOCKED[e.project] for e in lockfile.entries)


def test_uv_lock_lists_the_virtual_project_itself_as_skipped() -> None:
    lockfile = read_lockfile(SAMPLES / "uv.lock")
    assert [(s.project, s.reason) for s in lockfile.skipped] == [
        ("sample-app", "the locked project itself (virtual), not an index file")]


def test_urls_keep_the_address_of_the_index_but_only_the_filename_identifies() -> None:
    lockfile = read_lockfile(SAMPLES / "pylock.toml")
    entry = next(e for e in lockfile.entries if isinstance(e, FileEntry) and e.filename == "pkg_a-1.0.tar.gz")
    assert entry.url is not None and entry.url.startswith(SAMPLE_INDEX_URL + "/packages/")
    assert entry.where.endswith("pylock.toml: package 'pkg-a' 1.0: sdist 'pkg_a-1.0.tar.gz'")


@pytest.mark.parametrize("name", ["pylock.toml", "poetry.lock"])
def test_package_markers_drop_packages_no_requested_python_or_platform_installs(name: str) -> None:
    lockfile = read_lockfile(SAMPLES / name, pythons=["3.12"], platforms=["manylinux_2_28_x86_64"])
    assert file_triples(lockfile) == expected_files({k: v for k, v in LOCKED.items() if k not in ("pkg-c", "pkg-e")})
    assert sorted(s.project for s in lockfile.skipped if s.project is not None) == ["pkg-c", "pkg-e"]


@pytest.mark.parametrize("name", ["pylock.toml", "poetry.lock"])
def test_package_markers_keep_packages_a_requested_target_installs(name: str) -> None:
    lockfile = read_lockfile(SAMPLES / name, pythons=["3.11"], platforms=["win_amd64"])
    assert file_triples(lockfile) == expected_files()


@pytest.mark.e2e
@pytest.mark.skipif(uv_executable() is None, reason="uv is part of the test extra")
def test_committed_uv_samples_read_the_same_as_what_uv_writes_today(tmp_path: Path) -> None:
    written = generate_samples(tmp_path)  # poetry is not installed here: poetry.lock is not regenerated
    assert written == ["uv.lock", "pylock.toml", "requirements.txt"]
    for name in written:
        fresh, committed = read_lockfile(tmp_path / name), read_lockfile(SAMPLES / name)
        assert file_triples(fresh) == file_triples(committed), name
        assert {(p, sha) for p, _, sha in file_triples(fresh)} == {(p, sha) for p, _, sha in expected_files()}, name
        assert [s.project for s in fresh.skipped] == [s.project for s in committed.skipped], name


# -- hand-made edge cases, one table per format ------------------------------------------------

SHA_A = "a" * 64
SHA_B = "b" * 64

UV_CASES = [
    pytest.param(
        f'version = 1\n[[package]]\nname = "Foo.Bar"\nversion = "1.0"\nsource = {{ registry = "https://example.org/simple" }}\n'
        f'wheels = [{{ url = "https://example.org/f/foo_bar-1.0-cp312-cp312-manylinux_2_17_x86_64.whl#sha256={SHA_A}", '
        f'hash = "sha256:{SHA_A.upper()}" }}]\n',
        {("foo-bar", "foo_bar-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", SHA_A)}, [], [],
        id="name-normalized-fragment-dropped-hash-lowercased"),
    pytest.param(
        f'version = 1\n[[package]]\nname = "foo"\nversion = "1.0"\nsource = {{ registry = "../wheels" }}\n'
        f'wheels = [{{ path = "../wheels/foo-1.0-py3-none-any.whl", hash = "sha256:{SHA_A}" }}]\n',
        {("foo", "foo-1.0-py3-none-any.whl", SHA_A)}, [], [], id="local-registry-path"),
    pytest.param(
        f'version = 1\n[[package]]\nname = "foo"\nversion = "1.0"\nsource = {{ registry = "https://example.org/simple" }}\n'
        f'sdist = {{ url = "https://example.org/f/foo%2Bbar-1.0.tar.gz", hash = "sha256:{SHA_A}" }}\n',
        {("foo", "foo+bar-1.0.tar.gz", SHA_A)}, [], [], id="percent-decoded-filename"),
    pytest.param(
        'version = 1\n'
        '[[package]]\nname = "g"\nversion = "1"\nsource = { git = "https://example.org/g.git?rev=x#abc" }\n'
        '[[package]]\nname = "p"\nversion = "1"\nsource = { path = "dist/p-1.whl" }\n'
        '[[package]]\nname = "d"\nversion = "1"\nsource = { directory = "libs/d" }\n'
        '[[package]]\nname = "e"\nversion = "1"\nsource = { editable = "." }\n'
        f'[[package]]\nname = "u"\nversion = "1"\nsource = {{ url = "https://example.org/u-1.tar.gz" }}\n'
        f'sdist = {{ hash = "sha256:{SHA_A}" }}\n',
        set(), ["g", "p", "d", "e", "u"], [], id="non-index-sources-skipped"),
    pytest.param(
        f'version = 1\n[[package]]\nname = "foo"\nversion = "1.0"\nsource = {{ registry = "https://example.org/simple" }}\n'
        f'sdist = {{ url = "https://example.org/f/foo-1.0.tar.gz" }}\n'
        f'wheels = [{{ url = "https://example.org/f/foo-1.0-py3-none-any.whl", hash = "md5:{"c" * 32}" }},\n'
        f'  {{ url = "https://example.org/f/foo-1.0-py2-none-any.whl", hash = "sha256:{SHA_B}" }}]\n',
        {("foo", "foo-1.0-py2-none-any.whl", SHA_B)}, [],
        ["package 'foo' 1.0: sdist 'foo-1.0.tar.gz': no hash; files are identified by sha256",
         "package 'foo' 1.0: wheel 'foo-1.0-py3-none-any.whl': only md5 hashes; files are identified by sha256"],
        id="missing-and-md5-only-hashes-reported-the-rest-kept"),
    pytest.param(
        'version = 1\n[[package]]\nname = "foo"\nversion = "1.0"\nsource = { registry = "https://example.org/simple" }\n',
        set(), [], ["package 'foo' 1.0: no sdist or wheels listed"], id="registry-package-without-files"),
]


@pytest.mark.parametrize(("text", "files", "skipped", "problems"), UV_CASES)
def test_uv_lock_edge_cases(tmp_path: Path, text: str, files: set[tuple[str, str, str]], skipped: list[str],
                            problems: list[str]) -> None:
    lockfile = read_lockfile(write(tmp_path, "uv.lock", text))
    assert (file_triples(lockfile), [s.project for s in lockfile.skipped], [f"{p.where}: {p.reason}" for p in lockfile.problems]) \
        == (files, skipped, problems)


PYLOCK_CASES = [
    pytest.param(
        f'lock-version = "1.0"\ncreated-by = "hand"\n[[packages]]\nname = "foo"\n'
        f'wheels = [{{ name = "foo-1.0-py3-none-any.whl", url = "https://example.org/x/download?id=1", hashes = {{ sha256 = "{SHA_A}", sha512 = "{"d" * 128}" }} }}]\n',
        {("foo", "foo-1.0-py3-none-any.whl", SHA_A)}, [], [], id="name-wins-over-url-version-optional"),
    pytest.param(
        f'lock-version = "1.0"\ncreated-by = "hand"\n[[packages]]\nname = "foo"\nversion = "1.0"\n'
        f'sdist = {{ path = "C:\\\\wheels\\\\foo-1.0.tar.gz", hashes = {{ sha256 = "{SHA_A}" }} }}\n',
        {("foo", "foo-1.0.tar.gz", SHA_A)}, [], [], id="windows-path"),
    pytest.param(
        'lock-version = "1.0"\ncreated-by = "hand"\n'
        '[[packages]]\nname = "v"\nvcs = { type = "git", url = "https://example.org/v.git", commit-id = "abc" }\n'
        '[[packages]]\nname = "d"\ndirectory = { path = "." }\n'
        f'[[packages]]\nname = "a"\narchive = {{ url = "https://example.org/a-1.tar.gz", hashes = {{ sha256 = "{SHA_A}" }} }}\n',
        set(), ["v", "d", "a"], [], id="vcs-directory-archive-skipped"),
    pytest.param(
        f'lock-version = "1.0"\ncreated-by = "hand"\n[[packages]]\nname = "foo"\nversion = "1.0"\n'
        f'sdist = {{ url = "https://example.org/foo-1.0.tar.gz", hashes = {{ md5 = "{"c" * 32}" }} }}\n'
        f'wheels = [{{ url = "https://example.org/foo-1.0-py3-none-any.whl", hashes = {{ sha256 = "xyz" }} }}, {{ hashes = {{ sha256 = "{SHA_A}" }} }}]\n'
        '[[packages]]\nversion = "2"\n'
        '[[packages]]\nname = "bar"\n',
        set(), [],
        ["package 'foo' 1.0: sdist 'foo-1.0.tar.gz': only md5 hashes; files are identified by sha256",
         "package 'foo' 1.0: wheel 'foo-1.0-py3-none-any.whl': sha256 'xyz' is not 64 hex digits",
         "package 'foo' 1.0: wheel: no url, path or name to take a filename from",
         "packages #2: no name",
         "package 'bar': no sdist, wheels, archive, directory or vcs"],
        id="bad-entries-each-reported"),
]


@pytest.mark.parametrize(("text", "files", "skipped", "problems"), PYLOCK_CASES)
def test_pylock_edge_cases(tmp_path: Path, text: str, files: set[tuple[str, str, str]], skipped: list[str],
                           problems: list[str]) -> None:
    lockfile = read_lockfile(write(tmp_path, "pylock.toml", text))
    assert (file_triples(lockfile), [s.project for s in lockfile.skipped], [f"{p.where}: {p.reason}" for p in lockfile.problems]) \
        == (files, skipped, problems)


POETRY_CASES = [
    pytest.param(
        '[[package]]\nname = "foo"\nversion = "1.0"\n'
        f'files = [{{file = "foo-1.0.tar.gz", hash = "sha256:{SHA_A}"}}]\n'
        '[metadata]\nlock-version = "2.1"\ncontent-hash = "x"\n',
        {("foo", "foo-1.0.tar.gz", SHA_A)}, [], [], id="pypi-without-source-table"),
    pytest.param(
        '[[package]]\nname = "Foo"\nversion = "1.0"\n'
        '[metadata]\nlock-version = "1.1"\ncontent-hash = "x"\n'
        f'[metadata.files]\nfoo = [{{file = "Foo-1.0.tar.gz", hash = "sha256:{SHA_A}"}}]\n',
        {("foo", "Foo-1.0.tar.gz", SHA_A)}, [], [], id="lock-version-1-files-in-metadata"),
    pytest.param(
        '[[package]]\nname = "g"\nversion = "1"\nfiles = []\n[package.source]\ntype = "git"\nurl = "https://example.org/g.git"\n'
        '[[package]]\nname = "d"\nversion = "1"\nfiles = []\n[package.source]\ntype = "directory"\nurl = "libs/d"\n'
        '[[package]]\nname = "f"\nversion = "1"\nfiles = []\n[package.source]\ntype = "file"\nurl = "f-1.whl"\n'
        '[[package]]\nname = "u"\nversion = "1"\nfiles = []\n[package.source]\ntype = "url"\nurl = "https://example.org/u.zip"\n'
        '[metadata]\nlock-version = "2.1"\ncontent-hash = "x"\n',
        set(), ["g", "d", "f", "u"], [], id="non-index-sources-skipped"),
    pytest.param(
        '[[package]]\nname = "foo"\nversion = "1.0"\n'
        f'files = [{{file = "foo-1.0.tar.gz"}}, {{file = "foo-1.0-py3-none-any.whl", hash = "md5:{"c" * 32}"}}]\n'
        '[[package]]\nname = "bar"\nversion = "2"\nfiles = []\n'
        '[metadata]\nlock-version = "2.1"\ncontent-hash = "x"\n',
        set(), [],
        ["package 'foo' 1.0: file 'foo-1.0.tar.gz': no hash; files are identified by sha256",
         "package 'foo' 1.0: file 'foo-1.0-py3-none-any.whl': only md5 hashes; files are identified by sha256",
         "package 'bar' 2: no files listed"],
        id="bad-entries-each-reported"),
]


@pytest.mark.parametrize(("text", "files", "skipped", "problems"), POETRY_CASES)
def test_poetry_lock_edge_cases(tmp_path: Path, text: str, files: set[tuple[str, str, str]], skipped: list[str],
                                problems: list[str]) -> None:
    lockfile = read_lockfile(write(tmp_path, "poetry.lock", text))
    assert (file_triples(lockfile), [s.project for s in lockfile.skipped], [f"{p.where}: {p.reason}" for p in lockfile.problems]) \
        == (files, skipped, problems)


# -- detection by name and content -------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [
    ("uv.lock", "uv.lock"), ("poetry.lock", "poetry.lock"), ("pylock.toml", "pylock.toml"),
    ("pylock.dev.toml", "pylock.toml"), ("requirements.txt", "requirements.txt"),
    ("requirements-dev.txt", "requirements.txt"), ("constraints.in", "requirements.txt"),
    ("pylock.a.b.toml", None), ("locked.toml", None), ("deps", None),
])
def test_kind_by_name(name: str, kind: str | None) -> None:
    assert detect_kind_by_name(name) == kind


@pytest.mark.parametrize("sample", ["uv.lock", "pylock.toml", "poetry.lock", "requirements.txt"])
def test_a_renamed_lockfile_is_recognised_by_its_content(tmp_path: Path, sample: str) -> None:
    renamed = write(tmp_path, "ci-lock", (SAMPLES / sample).read_text(encoding="utf-8"))
    lockfile = read_lockfile(renamed)
    assert lockfile.kind == sample
    assert {sha for _, _, sha in file_triples(lockfile)} == {sha for _, _, sha in expected_files()}


@pytest.mark.parametrize(("location", "filename"), [
    ("https://example.org/packages/ab/cd/ef/foo-1.0.tar.gz", "foo-1.0.tar.gz"),
    ("http://127.0.0.1:8080/pypi/packages/ab/cd/ef/foo-1.0.tar.gz#sha256=00", "foo-1.0.tar.gz"),
    ("https://example.org/f/foo%2Bcpu-1.0-py3-none-any.whl?x=1", "foo+cpu-1.0-py3-none-any.whl"),
    ("../wheels/foo-1.0-py3-none-any.whl", "foo-1.0-py3-none-any.whl"),
    ("C:\\wheels\\foo-1.0.zip", "foo-1.0.zip"),
    ("https://example.org/", None),
])
def test_filename_from_location(location: str, filename: str | None) -> None:
    assert filename_from_location(location) == filename


# -- the error table: one line naming the file and where -------------------------------------

ERRORS = [
    pytest.param("uv.lock", 'version = 1\n[[package]]\nname = "foo"\nsource = { registry = "x" \n',
                 "uv.lock: line 4: not valid TOML: ", id="uv-lock-truncated"),
    pytest.param("pylock.toml", 'lock-version = "1.0"\n[[packages]\n', "pylock.toml: line 2: not valid TOML: ",
                 id="pylock-invalid"),
    pytest.param("poetry.lock", '[[package]]\nname = "foo', "poetry.lock: end of file: not valid TOML: ",
                 id="poetry-lock-cut-in-a-string"),
    pytest.param("pyproject.toml", '[project]\nname = "x"\n[build-system]\nrequires = []\n',
                 "pyproject.toml: not a lockfile (a pyproject.toml?)", id="foreign-toml-pyproject"),
    pytest.param("uv.lock", '[tool.black]\nline-length = 99\n', "uv.lock: not a lockfile (a pyproject.toml?)",
                 id="foreign-toml-named-uv-lock"),
    pytest.param("settings.toml", 'title = "x"\n', "settings.toml: not a lockfile: a TOML file that is none",
                 id="foreign-toml-other"),
    pytest.param("uv.lock", 'lock-version = "1.0"\ncreated-by = "x"\n[[packages]]\nname = "a"\n',
                 "uv.lock: named like a uv.lock but its content is a pylock.toml", id="name-and-content-disagree"),
    pytest.param("pylock.toml", 'lock-version = "2.0"\ncreated-by = "x"\n',
                 "pylock.toml: lock-version: lock-version 2.0 is newer than this reader understands (1.x)",
                 id="pylock-future-major"),
    pytest.param("uv.lock", 'version = 2\nrequires-python = ">=3.11"\n',
                 "uv.lock: version: uv.lock version 2 is newer than this reader understands (1)", id="uv-future-version"),
    pytest.param("uv.lock", 'version = 1\npackage = ["x"]\n', "uv.lock: package: is not an array of tables",
                 id="uv-package-not-tables"),
    pytest.param("requirements.txt", "# nothing but a comment\n\n", "requirements.txt: no requirements in it",
                 id="empty-requirements"),
    pytest.param("notes", "hello there, this is prose\n", "notes: not a lockfile: neither uv.lock",
                 id="prose-is-not-a-lockfile"),
]


@pytest.mark.parametrize(("name", "text", "message"), ERRORS)
def test_unreadable_lockfile_is_one_line_error_naming_file_and_entry(tmp_path: Path, name: str, text: str,
                                                                      message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(LockfileError) as caught:
        read_lockfile(path)
    text_of_error = str(caught.value)
    assert text_of_error.startswith(f"{tmp_path}/{message}"), text_of_error
    assert "\n" not in text_of_error
    assert isinstance(caught.value, PyPIMirrorError) and caught.value.path == str(path)


def test_binary_file_is_reported_as_not_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "uv.lock"
    path.write_bytes(b"version = 1\n\xff\xfe\x00")
    with pytest.raises(LockfileError, match=r"uv\.lock: byte 12: not UTF-8 text$"):
        read_lockfile(path)


def test_missing_file_is_reported_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(LockfileError, match=r"uv\.lock: cannot read: No such file or directory$"):
        read_lockfile(tmp_path / "uv.lock")


def test_raise_for_problems_names_the_first_entry_and_counts_the_rest(tmp_path: Path) -> None:
    lockfile = read_lockfile(write(tmp_path, "poetry.lock", str(POETRY_CASES[3].values[0])))
    with pytest.raises(LockfileError) as caught:
        lockfile.raise_for_problems()
    assert str(caught.value) == (f"{tmp_path}/poetry.lock: package 'foo' 1.0: file 'foo-1.0.tar.gz': "
                                 "no hash; files are identified by sha256 (and 2 more problems)")
    read_lockfile(SAMPLES / "uv.lock").raise_for_problems()  # a clean lockfile raises nothing


def test_skipped_entries_carry_the_file_and_package(tmp_path: Path) -> None:
    path = write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "Lib"\nversion = "2"\nsource = { editable = "lib" }\n')
    assert read_lockfile(path).skipped == (
        SkippedEntry(canonicalize_name("lib"), "an editable local project, not an index file", f"{path}: package 'Lib' 2"),)


def test_malformed_target_is_refused_even_for_a_lockfile_without_markers() -> None:
    with pytest.raises(PinTargetError, match=r"^'3': not a Python version like 3.12$"):
        read_lockfile(SAMPLES / "uv.lock", pythons=["3"])
    with pytest.raises(PinTargetError, match=r"^'win amd64': not a platform tag"):
        read_lockfile(SAMPLES / "uv.lock", platforms=["win amd64"])
