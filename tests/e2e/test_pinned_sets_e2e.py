"""Pinned sets end to end: lock through the mirror, pin, cache, stop the upstream, install.

The promise a pinned set makes is that a build works on the day the upstream does not. So each
test here locks a project of 18 dependencies with a real tool through the running mirror, pins
that lockfile with ``pypimirror pin add``, lets ``sync --once`` fill the cache, **stops the fake
upstream**, and installs from the lockfile through the mirror with a real installer. The access
log must then show every file (and ``.metadata``) the installer fetched answered 200 from the
mirror's own disk: a 302 would point at an upstream that is gone.

One mirror and one upstream serve the whole module (locking, pinning and caching happen once),
and each lockfile kind locks its own tree of projects, so no test can pass on another's set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cleanenv import scrub_environ
from fakedists import BuiltDist
from fakeindex import FakeIndex
from installers import pip_install, poetry_env, run_tool, uv_executable, uv_pip_install, uv_project_env
from mirrorprocess import (
    PREFIX, free_port, request, run_cli, running_server, stop_server, sync_once, wait_for, write_config,
)
from projecttree import ProjectTree, add_project_tree

from pypimirror.byteunits import format_bytes

pytestmark = pytest.mark.e2e

# One tree of projects per lockfile kind (the prefix of its project names).
TREES = {"uv-lock": "uvl", "requirements": "req", "pylock": "pyl", "poetry": "poe", "poetry-written": "pow"}
_NO_POETRY = ("poetry is not installed here (the test extra installs it; put one on PATH or beside this interpreter): "
              "test_written_poetry_lock_installs_with_the_upstream_stopped pins a poetry.lock the test writes")


@dataclass
class PinnedMirror:
    """The module's mirror after pinning and caching, serving with its upstream stopped."""

    tmp: Path
    config: Path
    port: int
    index_url: str
    access_log: Path
    offline_from: int
    """The access log's line count when the mirror started serving without its upstream."""
    trees: dict[str, ProjectTree]
    lockfiles: dict[str, Path]
    poetry_missing: str | None
    """Why no poetry.lock was made by poetry (then that test is skipped), or None."""


def poetry_executable() -> str | None:
    """A poetry on PATH or beside this interpreter (the test extra installs one there)."""
    return shutil.which("poetry") or shutil.which("poetry", path=os.path.dirname(sys.executable))


def uv_project(directory: Path, tree: ProjectTree) -> Path:
    """A virtual project (no build system) that depends on the tree's direct requirements."""
    directory.mkdir()
    dependencies = ", ".join(json.dumps(requirement) for requirement in tree.requirements)
    (directory / "pyproject.toml").write_text(
        f'[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\ndependencies = [{dependencies}]\n',
        encoding="utf-8")
    return directory


def lock_with_uv(tmp: Path, index_url: str, tree: ProjectTree, name: str) -> Path:
    project = uv_project(tmp / name, tree)
    run_tool([_uv(), "lock"], project, uv_project_env(index_url, tmp / "uv-lock-cache"))
    return project / "uv.lock"


def compile_requirements(tmp: Path, index_url: str, tree: ProjectTree) -> Path:
    work = tmp / "requirements"
    work.mkdir()
    (work / "requirements.in").write_text("\n".join(tree.requirements) + "\n", encoding="utf-8")
    run_tool([_uv(), "pip", "compile", "--generate-hashes", "--index-url", index_url, "-o", "requirements.txt",
              "requirements.in"], work, uv_project_env(index_url, tmp / "uv-lock-cache"))
    return work / "requirements.txt"


def export_pylock(tmp: Path, index_url: str, tree: ProjectTree) -> Path:
    project = lock_with_uv(tmp, index_url, tree, "pylock").parent
    pylock = project / "pylock.toml"
    run_tool([_uv(), "export", "--frozen", "--format", "pylock.toml", "-o", str(pylock)], project,
             uv_project_env(index_url, tmp / "uv-lock-cache"))
    return pylock


def lock_with_poetry(tmp: Path, index_url: str, tree: ProjectTree, poetry: str) -> Path:
    project = uv_project(tmp / "poetry", tree)
    with (project / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write(f'\n[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = "mirror"\n'
                        f'url = "{index_url}"\npriority = "primary"\n')
    run_tool([poetry, "lock"], project, poetry_env(tmp))
    return project / "poetry.lock"


def write_poetry_lock(directory: Path, index_url: str, tree: ProjectTree) -> Path:
    """A ``poetry.lock`` as poetry 2.x writes one for the tree locked through the mirror.

    For machines without poetry: the pinning path must still read the format. The shape (one
    ``[[package]]`` per locked package with its ``files`` and a ``legacy`` source) is the one
    the committed sample in ``tests/data/lockfiles`` shows.
    """
    blocks = ["# This file is automatically @generated by Poetry 2.5.1 and should not be changed by hand.\n"]
    for name, version in sorted(tree.locked.items()):
        files = ",\n".join(f'    {{file = "{dist.filename}", hash = "sha256:{dist.sha256}"}}'
                           for dist in tree.package_files[name])
        blocks.append(
            f'[[package]]\nname = "{name}"\nversion = "{version}"\ndescription = ""\noptional = false\n'
            f'python-versions = "*"\ngroups = ["main"]\nfiles = [\n{files},\n]\n\n'
            f'[package.source]\ntype = "legacy"\nurl = "{index_url.rstrip("/")}"\nreference = "mirror"\n')
    blocks.append('[metadata]\nlock-version = "2.1"\npython-versions = ">=3.11"\ncontent-hash = "0"\n')
    directory.mkdir()
    path = directory / "poetry.lock"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def _uv() -> str:
    uv = uv_executable()
    assert uv is not None, "uv is part of the test extra"
    return uv


def pin_add(config: Path, name: str, lockfile: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("pin", "add", name, str(lockfile), "-c", str(config))


def refuses_connections(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.fixture(scope="module")
def pinned_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinnedMirror]:
    """Lock every tree through the mirror, pin each lockfile, run the cache, stop the upstream.

    Yields while the mirror serves again, now with no upstream behind it.
    """
    tmp = tmp_path_factory.mktemp("pinned")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as environ:
        scrub_environ(environ)
        fake = stack.enter_context(FakeIndex())
        trees = {kind: add_project_tree(fake, prefix) for kind, prefix in TREES.items()}
        port = free_port()  # fixed: lockfiles name the mirror's address, and the server starts twice
        # Votes keep nothing here (one client network never reaches the minimum): only pins do.
        config = write_config(tmp, fake, listen=f"127.0.0.1:{port}", cache={"min_vote_count": 1000})
        index_url = f"http://127.0.0.1:{port}{PREFIX}/simple/"
        sync_once(config)

        poetry = poetry_executable()
        with running_server(config, tmp / "serve-lock.err") as (process, _):
            lockfiles = {
                "uv-lock": lock_with_uv(tmp, index_url, trees["uv-lock"], "uv-project"),
                "requirements": compile_requirements(tmp, index_url, trees["requirements"]),
                "pylock": export_pylock(tmp, index_url, trees["pylock"]),
                "poetry-written": write_poetry_lock(tmp / "poetry-written", index_url, trees["poetry-written"]),
            }
            if poetry is not None:
                lockfiles["poetry"] = lock_with_poetry(tmp, index_url, trees["poetry"], poetry)
            stop_server(process, tmp / "serve-lock.err")  # a clean stop: every access log line complete

        for kind, lockfile in lockfiles.items():
            result = pin_add(config, kind, lockfile)
            assert result.returncode == 0, f"pin add {kind}: {result.stdout}{result.stderr}"
        sync_once(config)  # index sync, then the cache run that downloads the pinned files

        upstream_url = fake.url
        fake.stop()
        assert refuses_connections(upstream_url)
        access_log = tmp / "access.log"
        offline_from = len(log_entries(access_log))
        stack.enter_context(running_server(config, tmp / "serve-offline.err"))
        yield PinnedMirror(tmp, config, port, index_url, access_log, offline_from, trees, lockfiles,
                           None if poetry else _NO_POETRY)


# --------------------------------------------------------------------------- access log


def log_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_all_served_locally(mirror: PinnedMirror, tree: ProjectTree) -> None:
    """Every wheel of the tree was fetched, and every request for a file of the tree's projects
    since the upstream stopped was answered 200 from the mirror's disk.

    The access log is written by a thread of the server, so the lines of a finished install can
    still be on their way: wait for them rather than read once.
    """
    def tree_file_entries() -> list[dict[str, Any]]:
        return [e for e in log_entries(mirror.access_log)[mirror.offline_from:]
                if e["path"].startswith(f"{PREFIX}/packages/") and tree.owns(e["path"].rsplit("/", 1)[-1])]

    fetched = {PREFIX + dist.path for dist in tree.wheels}
    wait_for(lambda: fetched <= {e["path"] for e in tree_file_entries()}, timeout=30)
    entries = tree_file_entries()
    not_local = [(e["path"], e["status"]) for e in entries if e["status"] != 200]
    assert not_local == [], "not served from the mirror's disk"
    assert {e["path"] for e in entries} <= {PREFIX + dist.path for dist in tree.files} | {
        PREFIX + dist.path + ".metadata" for dist in tree.wheels}


def installed_versions(site: Path) -> dict[str, str]:
    """``name: version`` of every distribution in ``site`` (a target dir or a venv's site-packages)."""
    found = {}
    for info in site.glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[name.replace("_", "-")] = version
    return found


# --------------------------------------------------------------------------- the tests


def pinned_trees(mirror: PinnedMirror) -> dict[str, tuple[BuiltDist, ...]]:
    """Each pinned set's name (its lockfile's kind) and the files of the tree its lockfile locked."""
    return {kind: mirror.trees[kind].files for kind in sorted(mirror.lockfiles)}


def test_the_cache_run_fetched_exactly_the_locked_files_sdists_included(pinned_mirror: PinnedMirror) -> None:
    tier = pinned_mirror.tmp / "repo" / "packages"
    expected = {dist.path.removeprefix("/packages/"): dist.sha256
                for files in pinned_trees(pinned_mirror).values() for dist in files}
    assert any(path.endswith(".tar.gz") for path in expected)
    cached = {str(path.relative_to(tier)): hashlib.sha256(path.read_bytes()).hexdigest()
              for path in tier.rglob("*") if path.is_file() and path.suffix != ".metadata"}
    assert cached == expected  # no older version, no file of an unpinned tree
    listed = run_cli("pin", "list", "-c", str(pinned_mirror.config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        f"{kind}: {len(files)} files, {format_bytes(sum(d.size for d in files))}, {len(files)} of {len(files)} local"
        for kind, files in pinned_trees(pinned_mirror).items()]


def test_the_offline_mirror_s_info_page_lists_every_set_as_local(pinned_mirror: PinnedMirror) -> None:
    status, _, body = request(pinned_mirror.port, f"{PREFIX}/")
    assert status == 200
    page = body.decode()
    for kind, files in pinned_trees(pinned_mirror).items():
        n = len(files)
        assert (f'<tr id="pinned-{kind}"><td>{kind}</td><td>{n}</td><td>{format_bytes(sum(d.size for d in files))}'
                f'</td><td class="ok">{n} of {n}</td></tr>') in page


def test_uv_sync_frozen_installs_a_pinned_uv_lock_with_the_upstream_stopped(pinned_mirror: PinnedMirror) -> None:
    mirror = pinned_mirror
    tree = mirror.trees["uv-lock"]
    project = mirror.lockfiles["uv-lock"].parent
    run_tool([_uv(), "sync", "--frozen"], project, uv_project_env(mirror.index_url, mirror.tmp / "uv-sync-cache"))
    (site,) = (project / ".venv" / "lib").glob("python3.*/site-packages")
    assert installed_versions(site) == tree.locked
    assert_all_served_locally(mirror, tree)


def test_pip_require_hashes_installs_a_pinned_requirements_txt_with_the_upstream_stopped(
        pinned_mirror: PinnedMirror) -> None:
    mirror = pinned_mirror
    tree = mirror.trees["requirements"]
    target = mirror.tmp / "pip-target"
    result = pip_install(mirror.index_url, target, "-r", str(mirror.lockfiles["requirements"]),
                         extra=("--require-hashes",))
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_versions(target) == tree.locked
    assert_all_served_locally(mirror, tree)


def test_uv_installs_a_pinned_pylock_toml_with_the_upstream_stopped(pinned_mirror: PinnedMirror) -> None:
    mirror = pinned_mirror
    tree = mirror.trees["pylock"]
    pylock = tomllib.loads(mirror.lockfiles["pylock"].read_text(encoding="utf-8"))
    assert {p["name"]: p["version"] for p in pylock["packages"]} == tree.locked
    target = mirror.tmp / "pylock-target"
    result = uv_pip_install(mirror.index_url, target, "-r", str(mirror.lockfiles["pylock"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_versions(target) == tree.locked
    assert_all_served_locally(mirror, tree)


def requirements_from_poetry_lock(lockfile: Path, destination: Path) -> Path:
    """pip's ``--require-hashes`` input: each locked package pinned with the hashes of its files."""
    lock = tomllib.loads(lockfile.read_text(encoding="utf-8"))
    lines = [f"{package['name']}=={package['version']} "
             + " ".join(f"--hash={entry['hash']}" for entry in package["files"])
             for package in lock["package"]]
    destination.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return destination


def install_poetry_lock(mirror: PinnedMirror, kind: str) -> None:
    tree = mirror.trees[kind]
    lock = tomllib.loads(mirror.lockfiles[kind].read_text(encoding="utf-8"))
    assert {p["name"]: p["version"] for p in lock["package"]} == tree.locked
    requirements = requirements_from_poetry_lock(mirror.lockfiles[kind], mirror.tmp / f"{kind}-requirements.txt")
    target = mirror.tmp / f"{kind}-target"
    result = pip_install(mirror.index_url, target, "-r", str(requirements), extra=("--require-hashes",))
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_versions(target) == tree.locked
    assert_all_served_locally(mirror, tree)


def locked_packages(lockfile: Path) -> list[dict[str, Any]]:
    """What a poetry.lock says each package is and which files it has, in its order."""
    lock = tomllib.loads(lockfile.read_text(encoding="utf-8"))
    return [{key: package[key] for key in ("name", "version", "files", "source")} for package in lock["package"]]


def test_poetry_lock_made_by_poetry_installs_with_the_upstream_stopped(pinned_mirror: PinnedMirror) -> None:
    if pinned_mirror.poetry_missing is not None:
        pytest.skip(pinned_mirror.poetry_missing)
    made_by_poetry = pinned_mirror.lockfiles["poetry"]
    # The lock written where poetry is missing must read as poetry's own for the same tree.
    written = write_poetry_lock(pinned_mirror.tmp / "poetry-compared", pinned_mirror.index_url,
                                pinned_mirror.trees["poetry"])
    assert locked_packages(written) == locked_packages(made_by_poetry)
    install_poetry_lock(pinned_mirror, "poetry")


def test_written_poetry_lock_installs_with_the_upstream_stopped(pinned_mirror: PinnedMirror) -> None:
    install_poetry_lock(pinned_mirror, "poetry-written")


# --------------------------------------------------------------------------- the budget


def hashed_requirements(path: Path, fake: FakeIndex, *projects: str) -> Path:
    """A requirements file pinning each project's only release to the hashes of its files."""
    lines = []
    for name in projects:
        (release,) = fake.project(name).releases.values()
        lines.append(f"{name}=={release.version} " + " ".join(f"--hash=sha256:{d.sha256}" for d in release.files))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cached_files(tier: Path) -> dict[str, int]:
    """Every file in the tier and its inode: a file evicted and fetched again gets a new one."""
    return {str(p.relative_to(tier)): p.stat().st_ino for p in tier.rglob("*") if p.is_file()}


def test_a_set_larger_than_the_free_budget_is_refused_and_nothing_is_evicted(fake_index: FakeIndex,
                                                                             tmp_path: Path) -> None:
    fake_index.add_project("kept", sdist=False, payload_size=150_000)
    fake_index.add_project("popular", sdist=False, payload_size=200_000)
    for name in ("bulk-1", "bulk-2", "bulk-3"):
        fake_index.add_project(name, sdist=False, payload_size=200_000)
    config = write_config(tmp_path, fake_index, trusted_proxies=["127.0.0.1/32"],
                          cache={"size_limit": "500k", "min_vote_count": 2})
    sync_once(config)
    (popular,) = fake_index.files("popular")
    with running_server(config, tmp_path / "serve.err") as (process, port):
        for network in ("10.1.1.1", "10.2.2.2"):
            status, _, _ = request(port, f"{PREFIX}{popular.path}", {"X-Forwarded-For": network})
            assert status == 302
        stop_server(process, tmp_path / "serve.err")  # a clean stop stores the votes still queued
    small = pin_add(config, "small", hashed_requirements(tmp_path / "small.txt", fake_index, "kept"))
    assert small.returncode == 0, small.stderr
    sync_once(config)
    tier = tmp_path / "repo" / "packages"
    before = cached_files(tier)
    assert sorted(path.rsplit("/", 1)[-1] for path in before) == [
        "kept-1.0-py3-none-any.whl", "kept-1.0-py3-none-any.whl.metadata",
        "popular-1.0-py3-none-any.whl", "popular-1.0-py3-none-any.whl.metadata"]

    big = pin_add(config, "big", hashed_requirements(tmp_path / "big.txt", fake_index, "bulk-1", "bulk-2", "bulk-3"))
    (message,) = big.stderr.strip().splitlines()
    budget, pinned = 500 * 1024, sum(d.size for d in fake_index.files("kept"))
    needed = sum(d.size for name in ("bulk-1", "bulk-2", "bulk-3") for d in fake_index.files(name))
    assert message == (
        f"pypimirror: error: pinned set 'big' does not fit: it needs {format_bytes(needed)} (3 files) and the cache "
        f"tiers have {format_bytes(budget - pinned)} free for pinned files ({format_bytes(budget)} in all, "
        f"{format_bytes(pinned)} pinned by other sets); nothing was pinned or evicted")
    assert big.returncode == 2
    assert cached_files(tier) == before
    listed = run_cli("pin", "list", "-c", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"small: 1 files, {format_bytes(pinned)}, 1 of 1 local"]
