"""A pypimirror is a complete upstream for another one: B syncs its index from A (which syncs from
the fake upstream), serves the same pages but for its own URLs, and pip installs through B.

Misses chain: B redirects to A's ``packages`` URL, and A serves the file or redirects onward.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fakeindex import FakeIndex
from installers import pip_install
from mirrorprocess import (
    PREFIX,
    request,
    run_cli,
    running_server,
    stop_server,
    write_config,
)

pytestmark = pytest.mark.e2e

B_PREFIX = "/mirror"
JSON_PAGE = "application/vnd.pypi.simple.v1+json"
HTML_PAGE = "text/html"


def get(port: int, path: str, accept: str = "*/*") -> tuple[dict[str, str], bytes]:
    status, headers, body = request(port, path, {"Accept": accept})
    assert status == 200, (path, status, body[:200])
    return headers, body


def as_b(body: bytes) -> bytes:
    """A's page with A's own URLs (under ``/pypi/``) where B has its own (under ``/mirror/``)."""
    return body.replace(f"{PREFIX}/".encode(), f"{B_PREFIX}/".encode())


@pytest.fixture
def chain(fake_index: FakeIndex, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Mirror A of the fake and mirror B of A, both synced once and serving: (port A, port B)."""
    fake_index.add_project("leaf", ["0.5"])
    fake_index.add_project("Chained.Pkg", ["1.0", "2.0"], dependencies=["leaf"], requires_python=">=3.8")
    fake_index.yank("Chained.Pkg", "1.0", "broken build")
    with ExitStack() as stack:
        (tmp_path / "a").mkdir()
        config_a = write_config(tmp_path / "a", fake_index)
        result = run_cli("sync", "--once", "-c", str(config_a))
        assert result.returncode == 0, result.stderr
        process_a, port_a = stack.enter_context(running_server(config_a, tmp_path / "a.log"))

        (tmp_path / "b").mkdir()
        primary = f"http://127.0.0.1:{port_a}{PREFIX}"
        config_b = write_config(
            tmp_path / "b", fake_index, prefix=B_PREFIX,
            upstream={"pypi_url": primary, "packages_url": f"{primary}/packages"},
        )
        result = run_cli("sync", "--once", "-c", str(config_b))
        assert result.returncode == 0, result.stderr
        process_b, port_b = stack.enter_context(running_server(config_b, tmp_path / "b.log"))
        yield port_a, port_b
        stop_server(process_b, tmp_path / "b.log")
        stop_server(process_a, tmp_path / "a.log")


@pytest.mark.parametrize("accept", [JSON_PAGE, HTML_PAGE])
@pytest.mark.parametrize("project", ["chained-pkg", "leaf"])
def test_secondary_project_pages_equal_the_primarys_but_for_its_own_urls(
    chain: tuple[int, int], project: str, accept: str
) -> None:
    port_a, port_b = chain
    headers_a, page_a = get(port_a, f"{PREFIX}/simple/{project}/", accept)
    headers_b, page_b = get(port_b, f"{B_PREFIX}/simple/{project}/", accept)
    assert f"{B_PREFIX}/packages/".encode() in page_b
    assert page_b == as_b(page_a)
    assert headers_b["x-pypi-last-serial"] == headers_a["x-pypi-last-serial"]


def test_secondary_root_page_and_json_api_equal_the_primarys(chain: tuple[int, int], fake_index: FakeIndex) -> None:
    port_a, port_b = chain
    _, root_a = get(port_a, f"{PREFIX}/simple/", JSON_PAGE)
    _, root_b = get(port_b, f"{B_PREFIX}/simple/", JSON_PAGE)
    assert root_b == root_a
    listed = {entry["name"]: entry["_last-serial"] for entry in json.loads(root_b)["projects"]}
    assert listed.keys() == {"Chained.Pkg", "leaf"} and max(listed.values()) == fake_index.serial
    assert get(port_b, f"{B_PREFIX}/simple/", HTML_PAGE)[1] == as_b(get(port_a, f"{PREFIX}/simple/", HTML_PAGE)[1])
    headers_a, document_a = get(port_a, f"{PREFIX}/pypi/chained-pkg/json")
    headers_b, document_b = get(port_b, f"{B_PREFIX}/pypi/chained-pkg/json")
    assert document_b == document_a
    assert headers_b["x-pypi-last-serial"] == headers_a["x-pypi-last-serial"] == str(json.loads(document_a)["last_serial"])


def test_secondary_miss_redirects_to_the_primary_which_redirects_onward(
    chain: tuple[int, int], fake_index: FakeIndex
) -> None:
    port_a, port_b = chain
    dist = next(d for d in fake_index.files("chained-pkg", "2.0") if d.filename.endswith(".whl"))
    relative = dist.path.removeprefix("/packages/")
    status, headers, _ = request(port_b, f"{B_PREFIX}/packages/{relative}")
    assert status == 302 and headers["location"] == f"http://127.0.0.1:{port_a}{PREFIX}/packages/{relative}"
    status, headers, _ = request(port_a, f"{PREFIX}/packages/{relative}")
    assert status == 302 and headers["location"] == f"{fake_index.packages_url}/{relative}"


def test_pip_installs_through_the_secondary(chain: tuple[int, int], tmp_path: Path) -> None:
    _, port_b = chain
    target = tmp_path / "site"
    result = pip_install(f"http://127.0.0.1:{port_b}{B_PREFIX}/simple/", target, "chained-pkg")
    assert result.returncode == 0, result.stdout + result.stderr
    installed = sorted(p.name for p in target.glob("*.dist-info"))
    assert installed == ["chained_pkg-2.0.dist-info", "leaf-0.5.dist-info"], installed
