"""Views through the running mirror: real pip and uv behind a cooldown, the same file refused and served."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from installers import pip_install, uv_pip_install
from mirrorprocess import PREFIX, request, running_server, stop_server, sync_once, write_config

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
