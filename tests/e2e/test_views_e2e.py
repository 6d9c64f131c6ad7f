"""Views through the running mirror: real pip and uv behind a cooldown, the same file refused and served."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from fakeindex import FakeIndex
from installers import installer_env, pip_install, uv_executable, uv_pip_install
from mirrorprocess import PREFIX, request, running_server, stop_server, sync_once, write_config

from pypimirror.asof import format_as_of
from pypimirror.handlers.views import VIEW_REASON_HEADER

pytestmark = pytest.mark.e2e

V1_JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def cooling(fake_index: FakeIndex) -> FakeIndex:
    """``cooling`` 1.0 uploaded thirty days ago and 2.0 one day ago."""
    now = datetime.now(UTC).replace(tzinfo=None)  # the fake index takes naive UTC times
    fake_index.add_project("cooling", ["1.0"], upload_time=now - timedelta(days=30))
    fake_index.add_release("cooling", "2.0", upload_time=now - timedelta(days=1))
    return fake_index


def installed_version(target: Path) -> str:
    [dist_info] = target.glob("cooling-*.dist-info")
    return dist_info.name.removeprefix("cooling-").removesuffix(".dist-info")


def test_pip_and_uv_through_a_cooldown_install_the_previous_version(cooling: FakeIndex, tmp_path: Path):
    config = write_config(tmp_path, cooling, views={"stable": {"min_age": "7d"}})
    sync_once(config)
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        base = f"http://127.0.0.1:{port}{PREFIX}"
        for index_url, expected in ((f"{base}/+cooldown/7d/simple/", "1.0"), (f"{base}/+view/stable/simple/", "1.0"),
                                    (f"{base}/simple/", "2.0")):
            tag = re.sub(r"\W+", "-", index_url.removeprefix(base))
            pip_result = pip_install(index_url, tmp_path / f"pip{tag}", "cooling")
            assert pip_result.returncode == 0, pip_result.stdout + pip_result.stderr
            uv_result = uv_pip_install(index_url, tmp_path / f"uv{tag}", "cooling")
            assert uv_result.returncode == 0, uv_result.stdout + uv_result.stderr
            assert installed_version(tmp_path / f"pip{tag}") == expected, index_url
            assert installed_version(tmp_path / f"uv{tag}") == expected, index_url

        [newest] = [d for d in cooling.files("cooling", "2.0") if d.filename.endswith(".whl")]
        relpath = newest.path.removeprefix("/packages/")
        status, headers, body = request(port, f"{PREFIX}/+cooldown/7d/packages/{relpath}")
        assert status == 403
        assert "less than 7d ago" in headers[VIEW_REASON_HEADER.lower()]
        assert headers[VIEW_REASON_HEADER.lower()] in body.decode()
        status, headers, _ = request(port, f"{PREFIX}/packages/{relpath}")
        assert status == 302
        assert headers["location"] == f"{cooling.packages_url}/{relpath}"

        # The view's JSON-API document and both page encodings agree with what was installed.
        status, _, body = request(port, f"{PREFIX}/+cooldown/7d/pypi/cooling/json")
        assert status == 200
        assert list(json.loads(body)["releases"]) == ["1.0"]
        status, _, body = request(port, f"{PREFIX}/+cooldown/7d/simple/cooling/", {"Accept": V1_JSON})
        assert json.loads(body)["versions"] == ["1.0"]
        status, _, body = request(port, f"{PREFIX}/+cooldown/7d/simple/cooling/", {"Accept": "text/html"})
        assert re.findall(r">([^<]+)</a>", body.decode()) == [d.filename for d in cooling.files("cooling", "1.0")]
        stop_server(process, stderr_path)


# --------------------------------------------------------------------------- +asof


def page_json(port: int, path: str) -> dict[str, Any]:
    status, _, body = request(port, path, {"Accept": V1_JSON})
    assert status == 200, (path, body)
    return cast(dict[str, Any], json.loads(body))


def agreeing_files(port: int, path: str) -> dict[str, bool | str]:
    """The files of a view's page with their yank state, the same in its JSON and its HTML."""
    doc = page_json(port, path)
    status, _, html = request(port, path, {"Accept": "text/html"})
    assert status == 200
    anchors = re.findall(r'<a href="([^"#]+)[^"]*"((?: [a-z-]+="[^"]*")*)>([^<]+)</a>', html.decode())
    from_html = {}
    for href, attributes, filename in anchors:
        yanked = re.search(r'data-yanked="([^"]*)"', attributes)
        from_html[filename] = (href, False if yanked is None else (yanked[1] or True))
    from_json = {f["filename"]: (f["url"], f["yanked"]) for f in doc["files"]}
    assert from_html == from_json
    return {filename: yanked for filename, (_, yanked) in from_json.items()}


def test_asof_shows_yanks_removals_and_quarantines_as_they_were(fake_index: FakeIndex, tmp_path: Path):
    fake_index.add_project("yanky", ["1.0", "1.1"])
    fake_index.add_project("shrinking", ["1.0", "2.0"])
    fake_index.add_project("held", ["1.0"])
    fake_index.add_project("gone", ["1.0"])
    config = write_config(tmp_path, fake_index)
    sync_once(config)  # the history is complete from the end of this run
    t1 = time.time()
    [removed] = [d for d in fake_index.files("shrinking", "2.0") if d.filename.endswith(".whl")]
    [hidden] = [d for d in fake_index.files("held", "1.0") if d.filename.endswith(".whl")]
    [deleted] = [d for d in fake_index.files("gone", "1.0") if d.filename.endswith(".whl")]
    fake_index.remove_project("gone")
    fake_index.yank("yanky", "1.1", "broken build")
    fake_index.remove_release("shrinking", "2.0")
    fake_index.set_status("held", "quarantined")
    sync_once(config)  # records the changes at T2
    t3 = time.time()
    for dist in (removed, hidden, deleted):  # the upstream no longer offers them; a tier still holds them
        held_copy = tmp_path / "repo" / "packages" / dist.path.removeprefix("/packages/")
        held_copy.parent.mkdir(parents=True, exist_ok=True)
        held_copy.write_bytes(dist.content)
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        before, after = f"{PREFIX}/+asof/{format_as_of(t1)}", f"{PREFIX}/+asof/{format_as_of(t3)}"
        assert set(agreeing_files(port, f"{before}/simple/yanky/").values()) == {False}
        assert agreeing_files(port, f"{after}/simple/yanky/")["yanky-1.1-py3-none-any.whl"] == "broken build"

        assert removed.filename in agreeing_files(port, f"{before}/simple/shrinking/")
        assert removed.filename not in agreeing_files(port, f"{after}/simple/shrinking/")
        assert page_json(port, f"{before}/simple/shrinking/")["versions"] == ["1.0", "2.0"]
        status, _, body = request(port, f"{before}/packages/{removed.path.removeprefix('/packages/')}")
        assert (status, body) == (200, removed.content)

        assert agreeing_files(port, f"{before}/simple/held/") == {hidden.filename: False}
        assert "project-status" not in page_json(port, f"{before}/simple/held/")
        assert agreeing_files(port, f"{after}/simple/held/") == {}
        assert page_json(port, f"{after}/simple/held/")["project-status"] == {"status": "quarantined"}

        assert agreeing_files(port, f"{before}/simple/gone/") == {deleted.filename: False}
        status, _, body = request(port, f"{after}/simple/gone/")
        assert status == 404 and b"gone did not exist at" in body
        assert [p["name"] for p in page_json(port, f"{before}/simple/")["projects"]] == [
            "gone", "held", "shrinking", "yanky"]
        assert [p["name"] for p in page_json(port, f"{after}/simple/")["projects"]] == ["held", "shrinking", "yanky"]
        for path, reason in (
            (f"{PREFIX}/+asof/2001-01-01/simple/yanky/", "is before the index history began"),
            (f"{PREFIX}/+asof/2999-01-01T00:00:00Z/simple/", "2999-01-01T00:00:00Z is in the future"),
            (f"{PREFIX}/+asof/yesterday/simple/yanky/", "'yesterday' is not a moment"),
        ):
            status, headers, body = request(port, path)
            assert status == 404 and reason in body.decode(), (path, body)
        stop_server(process, stderr_path)


def uv_compile(index_url: str, requirements: Path, *extra: str) -> list[str]:
    """The pins ``uv pip compile`` resolves from ``index_url`` (``name==version`` lines)."""
    uv = uv_executable()
    assert uv is not None, "uv is part of the test extra"
    command = [uv, "pip", "compile", "--no-cache", "--no-header", "--no-annotate", "--index-url", index_url,
               "--python", sys.executable, str(requirements), *extra]
    result = subprocess.run(command, env=installer_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "==" in line]


def test_uv_compile_through_asof_pins_as_exclude_newer_does(fake_index: FakeIndex, tmp_path: Path):
    names = [f"timed-{i:02d}" for i in range(24)]
    for i, name in enumerate(names):  # each depends on the next, so the resolution is one chain
        fake_index.add_project(name, ["1.0", "1.1"], dependencies=[f"{names[i + 1]}>=1.0"] if i + 1 < len(names) else [])
    config = write_config(tmp_path, fake_index)
    sync_once(config)
    moment = time.time()
    later = datetime.fromtimestamp(moment + 60, UTC).replace(tzinfo=None)  # uploaded after the moment
    for i, name in enumerate(names):
        if i % 3:
            fake_index.add_release(name, "2.0", upload_time=later)
    sync_once(config)
    requirements = tmp_path / "requirements.in"
    requirements.write_text("".join(f"{name}\n" for name in names))
    stderr_path = tmp_path / "serve.err"
    with running_server(config, stderr_path) as (process, port):
        base = f"http://127.0.0.1:{port}{PREFIX}"
        plain = uv_compile(f"{base}/simple/", requirements, "--exclude-newer", format_as_of(moment))
        as_of = uv_compile(f"{base}/+asof/{format_as_of(moment)}/simple/", requirements)
        newest = uv_compile(f"{base}/simple/", requirements)
        stop_server(process, stderr_path)
    assert len(as_of) == len(names)
    assert as_of == plain
    assert as_of == [f"{name}==1.1" for name in names]
    assert newest != as_of  # the releases after the moment are there, and left out only by the moment
