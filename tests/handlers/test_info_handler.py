"""The info page over HTTP: the URL the client reached, its mode, the mirror's status, escaping."""

from __future__ import annotations


import pytest

from pypimirror.app import Services
from pypimirror.pinqueries import PinnedFile, store_pinned_set
from pypimirror.queries import finish_job_run, start_job_run, upsert_local_files

SCRIPT = "<script>document.title='pwned'</script>"


@pytest.fixture(name="services")
def _services(services_with_status: Services) -> Services:
    return services_with_status


@pytest.mark.gen_test
async def test_the_page_shows_how_to_use_this_mirror_at_the_address_asked(fetch, http_port, mirror_config):
    response = await fetch("/pypi/", headers={"Host": f"127.0.0.1:{http_port}"})
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    text = response.body.decode()
    url = f"http://127.0.0.1:{http_port}/pypi/simple/"
    assert f"pip install --index-url {url} &lt;package&gt;" in text
    assert f'url = "{url}"' in text and f"export UV_INDEX_URL={url}" in text
    assert f"trusted-host = 127.0.0.1:{http_port}" in text
    assert '<td id="client-ip">127.0.0.1</td>' in text
    assert '<span class="badge redirect">302 redirect</span>' in text
    assert f"<code>{mirror_config.upstream.redirect_url}</code>" in text


@pytest.mark.parametrize(
    "config_data", [{"views": {"stable": {"min_age": "7d", "exempt": ["internal-*"], "not_after": "2026-06-01"}}}],
    indirect=True,
)
@pytest.mark.gen_test
async def test_the_page_shows_how_to_use_the_views_with_pip_uv_and_poetry(fetch, http_port, config_data):
    text = (await fetch("/pypi/", headers={"Host": f"127.0.0.1:{http_port}"})).body.decode()
    cooldown = f"http://127.0.0.1:{http_port}/pypi/+cooldown/7d/simple/"
    assert f"pip install --index-url {cooldown} &lt;package&gt;" in text
    assert f"export UV_INDEX_URL={cooldown}" in text
    assert f"poetry source add --priority=primary mirror-cooldown {cooldown}" in text
    assert f"<code>http://127.0.0.1:{http_port}/pypi/+asof/&lt;timestamp&gt;/simple/</code>" in text
    assert (f'<tr id="view-stable"><td><code>http://127.0.0.1:{http_port}/pypi/+view/stable/simple/</code></td>'
            "<td>leaves out files uploaded less than 7d ago and files uploaded after 2026-06-01T00:00:00Z; "
            "exempt: internal-*</td></tr>") in text


@pytest.mark.gen_test
async def test_the_prefix_without_slash_is_a_redirect_to_the_page(fetch):
    response = await fetch("/pypi")
    assert (response.code, response.headers["Location"]) == (301, "/pypi/")


@pytest.mark.gen_test
async def test_head_sends_the_headers_only(fetch):
    response = await fetch("/pypi/", method="HEAD")
    assert response.code == 200 and response.body == b""
    assert int(response.headers["Content-Length"]) > 1000


@pytest.mark.parametrize(
    "config_data", [{"ip_modes": {"default": "302", "rules": [{"cidr": "127.0.0.0/8", "mode": "proxy"}]}}],
    indirect=True,
)
@pytest.mark.gen_test
async def test_a_proxy_mode_client_is_told_so(fetch, mirror_config):
    text = (await fetch("/pypi/")).body.decode()
    packages_url = mirror_config.upstream.packages_url
    assert '<span class="badge proxy">proxy</span>' in text and f"<code>{packages_url}</code>" in text


@pytest.mark.gen_test
async def test_forwarding_headers_from_an_untrusted_peer_are_ignored(fetch, http_port):
    headers = {"Host": f"127.0.0.1:{http_port}", "X-Forwarded-Host": "evil.example.org",
               "X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.9"}
    text = (await fetch("/pypi/", headers=headers)).body.decode()
    assert "evil.example.org" not in text and "192.0.2.9" not in text
    assert f"http://127.0.0.1:{http_port}/pypi/simple/" in text


@pytest.mark.parametrize("config_data", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
@pytest.mark.gen_test
async def test_a_trusted_proxy_names_the_public_origin_and_the_client(fetch, config_data):
    headers = {"Host": "10.0.0.5:8080", "X-Forwarded-Host": "pypi.example.org", "X-Forwarded-Proto": "https",
               "X-Forwarded-For": "192.0.2.9"}
    text = (await fetch("/pypi/", headers=headers)).body.decode()
    assert "pip install --index-url https://pypi.example.org/pypi/simple/" in text
    assert '<td id="client-ip">192.0.2.9</td>' in text and "trusted-host" not in text


@pytest.mark.parametrize("config_data", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("Host", f"mirror{SCRIPT}", 400),  # Tornado itself refuses it
        ("Host", "mirror&x='y'", 200),  # Tornado takes it (RFC 3986 sub-delims); the page does not show it
        ("X-Forwarded-Host", f"mirror{SCRIPT}", 200),
    ],
)
@pytest.mark.gen_test
async def test_a_hostile_host_header_never_reaches_the_page(fetch, http_port, header, value, status, config_data):
    headers = {"Host": f"127.0.0.1:{http_port}", header: value}
    response = await fetch("/pypi/", headers=headers)
    text = response.body.decode()
    assert response.code == status
    assert "<script" not in text and "pwned" not in text and "mirror&" not in text
    if status == 200:  # our own address when Host is bad, else the Host given (the same here)
        assert f"pip install --index-url http://127.0.0.1:{http_port}/pypi/simple/" in text


@pytest.mark.gen_test
async def test_the_last_sync_and_the_cache_fill_come_from_the_database(fetch, database, mirror_config):
    with database.begin() as conn:
        run_id = start_job_run(conn, "index_sync", mirror_config.node_id, 1_700_000_000.0)
        finish_job_run(conn, run_id, 1_700_000_042.0, "failed", {"projects": 2}, f"project {SCRIPT}: malformed")
        upsert_local_files(conn, mirror_config.node_id, [("ab/cd/x/a.whl", 3 * 2**20, 0)])
    text = (await fetch("/pypi/")).body.decode()
    assert "started 2023-11-14 22:13:20 UTC" in text and "took 42.0 s" in text
    assert "error: project &lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;: malformed" in text
    assert "no successful run yet" in text and "<script" not in text
    assert "<td>1</td><td>1</td><td>3.0 MiB</td><td>1.0 GiB</td><td>0%</td>" in text
    assert '<tr id="job-index_sync"><th>Index sync</th>' in text  # titles from the jobs' table
    assert 'Cache management</th><td class="muted">never ran' in text


@pytest.mark.gen_test
async def test_the_pinned_sets_come_from_the_database_with_how_many_files_are_local(fetch, database, mirror_config):
    files = [PinnedFile(f"ab/cd/x/{n}.whl", 2**20, "a" * 64) for n in ("a", "b", "c")]
    with database.begin() as conn:
        store_pinned_set(conn, "ci", created_at=1.0, sources=["uv.lock"], platforms=[], pythons=[], files=files)
        upsert_local_files(conn, mirror_config.node_id, [(files[0].path, 2**20, 0)])
    text = (await fetch("/pypi/")).body.decode()
    assert '<tr id="pinned-ci"><td>ci</td><td>3</td><td>3.0 MiB</td><td class="running">1 of 3</td></tr>' in text


@pytest.mark.parametrize("database", ["unreachable"], indirect=True)
@pytest.mark.gen_test
async def test_an_unreadable_database_leaves_the_page_with_its_usage_and_says_so(fetch, caplog, database):
    response = await fetch("/pypi/")
    assert response.code == 200
    text = response.body.decode()
    assert "unavailable: the database cannot be read" in text and "pip install --index-url" in text
    assert "info page without status: database error on sqlite:///" in caplog.text
