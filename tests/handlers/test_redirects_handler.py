"""Redirect-only routes, unknown paths, methods, and what every request leaves in the access log."""

from __future__ import annotations

import time

import pytest

UPSTREAM = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/web/project/demo/", f"{UPSTREAM}/project/demo/"),
        ("/pypi/web/project/demo/?a=1&b=%20", f"{UPSTREAM}/project/demo/?a=1&b=%20"),
        ("/pypi/web/", f"{UPSTREAM}/"),
        ("/pypi/web/search/%E9t%C3%A9", f"{UPSTREAM}/search/%E9t%C3%A9"),
    ],
)
@pytest.mark.gen_test
async def test_web_paths_redirect_to_the_upstream_site(fetch, path, location):
    response = await fetch(path)
    assert (response.code, response.headers["Location"]) == (302, location)


@pytest.mark.gen_test
async def test_web_redirect_escapes_raw_bytes(raw_request):
    answer = await raw_request(b"/pypi/web/ab\xff\"<x>")
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nLocation: " + UPSTREAM.encode() + b"/ab%FF%22%3Cx%3E\r\n" in head


@pytest.mark.parametrize(("path", "location"), [("/pypi/web", "/pypi/web/"), ("/pypi/web?q=1", "/pypi/web/?q=1")])
@pytest.mark.gen_test
async def test_subtree_roots_without_slash_redirect(fetch, path, location):
    response = await fetch(path)
    assert (response.code, response.headers["Location"]) == (301, location)


@pytest.mark.parametrize("path", ["/", "/pypi", "/pypi/", "/other/simple/", "/pypi/nothing/here", "/pypi/simple/a/b/c"])
@pytest.mark.gen_test
async def test_unknown_paths_are_plain_text_404(fetch, path):
    response = await fetch(path)
    assert response.code == 404
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.body == b"404 Not Found\n"
    assert "Server" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/pypi/simple/"), ("PUT", "/pypi/packages/x"), ("DELETE", "/pypi/web/")]
)
@pytest.mark.gen_test
async def test_other_methods_are_refused(fetch, method, path):
    response = await fetch(path, method=method, body=b"x", allow_nonstandard_methods=True)
    assert response.code == 405
    assert response.body == b"405 Method Not Allowed\n"


@pytest.mark.gen_test
async def test_every_request_leaves_one_access_log_entry(fetch, access_log, services):
    started = time.time()
    headers = {"User-Agent": "pip/26", "Referer": "http://example.org/"}
    await fetch("/pypi/web/x", headers=headers)
    await fetch("/pypi/simple/d%C3%A9mo/?format=x", headers=headers)
    await fetch("/pypi/nope", method="HEAD")
    await fetch("/pypi/simple/", method="POST", body=b"")
    entries = access_log.entries
    assert [(e.method, e.path, e.status) for e in entries] == [
        ("GET", "/pypi/web/x", 302),
        ("GET", "/pypi/simple/d\u00e9mo/", 404),  # decoded, without the query
        ("HEAD", "/pypi/nope", 404),
        ("POST", "/pypi/simple/", 405),
    ]
    first = entries[0]
    assert (first.client_ip, first.user_agent, first.referer) == ("127.0.0.1", "pip/26", "http://example.org/")
    assert first.proxied is False
    assert entries[1].bytes_sent == len(b"404 Not Found\n") and entries[2].bytes_sent == 0
    assert all(0 <= e.duration_s < 5 and started <= e.time <= time.time() for e in entries)
    assert services.in_flight.count == 0


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (b"/pypi/web/s?q=\xc3\xa9t\xe9", UPSTREAM.encode() + b"/s?q=%C3%A9t%E9"),
        (b"/pypi/web/s?a=%41%e9&b=%zz&c=%&d=%4", UPSTREAM.encode() + b"/s?a=%41%e9&b=%25zz&c=%25&d=%254"),
        (b"/pypi/web/s%zz/%?q=\"<x>`{|}^\\", UPSTREAM.encode() + b"/s%25zz/%25?q=%22%3Cx%3E%60%7B%7C%7D%5E%5C"),
        (b"/pypi/web/s?keep=/?:@!$&'()*+,;=-._~", UPSTREAM.encode() + b"/s?keep=/?:@!$&'()*+,;=-._~"),
        (b"/pypi/simple?\xff", b"/pypi/simple/?%FF"),
        (b"/pypi/simple/Demo/?format=\xe9", b"/pypi/simple/demo/?format=%E9"),
        (b"/pypi/Demo/json?x=\xe9%zz", b"/pypi/demo/json?x=%E9%25zz"),
        (b"/pypi/pypi/Demo/json?x=\xe9", b"/pypi/pypi/demo/json?x=%E9"),
    ],
)
@pytest.mark.gen_test
async def test_every_redirect_percent_encodes_the_query_it_keeps(raw_request, target, location):
    answer = await raw_request(target)
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert head.split(b" ", 2)[1] in (b"301", b"302"), head
    assert b"\r\nLocation: " + location + b"\r\n" in head
