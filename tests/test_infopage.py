"""The info page as a pure function: which origin it names, and that it escapes what it shows."""

from __future__ import annotations

import html

import pytest

from pypimirror.hitrate import summarize_hits
from pypimirror.infopage import InfoPage, is_valid_host, public_origin, render_info_page
from pypimirror.pinqueries import PinnedSetSummary
from pypimirror.queries import HitCount, JobRun
from pypimirror.status import JobStatus, MirrorStatus, TierFill

SCRIPT = "<script>document.title='pwned'</script>"


@pytest.mark.parametrize(
    "host",
    ["mirror.example.org", "mirror.example.org:8443", "127.0.0.1", "127.0.0.1:8080", "[::1]", "[2001:db8::1]:443",
     "localhost", "under_score.example.org", "mirror.example.org."],
)
def test_valid_hosts(host):
    assert is_valid_host(host)


@pytest.mark.parametrize(
    "host",
    ["", SCRIPT, "a b", "example.org/path", "example.org:", "example.org:123456", "user@example.org",
     "-bad.example.org", "[::1", "example.org\r\nX: y", '"quoted"', "a" * 300],
)
def test_invalid_hosts(host):
    assert not is_valid_host(host)


@pytest.mark.parametrize(
    ("tls", "host", "fwd_host", "fwd_proto", "trusted", "expected"),
    [
        (False, "mirror.example.org", None, None, False, ("http", "mirror.example.org")),
        (True, "mirror.example.org:8443", None, None, False, ("https", "mirror.example.org:8443")),
        # forwarding headers of an untrusted peer are ignored
        (False, "10.0.0.5:8080", "pypi.example.org", "https", False, ("http", "10.0.0.5:8080")),
        # ... and believed from a trusted proxy: the first entry, the one the client reached
        (False, "10.0.0.5:8080", "pypi.example.org, inner.example.org", "https, http", True,
         ("https", "pypi.example.org")),
        (True, "10.0.0.5", None, "http", True, ("http", "10.0.0.5")),
        (False, "10.0.0.5", None, "gopher", True, ("http", "10.0.0.5")),
        # an invalid forwarded host falls back to Host, an invalid Host to our own address
        (False, "mirror.example.org", SCRIPT, None, True, ("http", "mirror.example.org")),
        (False, SCRIPT, None, None, False, ("http", "192.0.2.1:3141")),
        (False, None, None, None, False, ("http", "192.0.2.1:3141")),
    ],
)
def test_public_origin(tls, host, fwd_host, fwd_proto, trusted, expected):
    origin = public_origin(tls=tls, host=host, forwarded_host=fwd_host, forwarded_proto=fwd_proto,
                           from_trusted_proxy=trusted, own_address="192.0.2.1:3141")
    assert origin == expected


def make_page(**changes: object) -> InfoPage:
    failed = JobRun(2, "index_sync", "node", 2000.0, 2030.0, "failed", {"projects": 7}, f"project {SCRIPT!r}: bad")
    ok = JobRun(1, "index_sync", "node", 1000.0, 1060.0, "ok", {}, None)
    values: dict[str, object] = {
        "index_url": "https://mirror.example.org/pypi/simple/",
        "host": "mirror.example.org",
        "scheme": "https",
        "prefix": "/pypi",
        "client_ip": "192.0.2.7",
        "mode": "302",
        "miss_url": "https://files.example.org/packages",
        "now": 2100.0,
        "status": MirrorStatus(jobs=(JobStatus("index_sync", failed, failed, ok, 1),),
                               tiers=(TierFill(0, 12, 3 * 2**30, 10 * 2**30),),
                               job_titles={"index_sync": "Index sync", "cache": "Cache management"}),
    }
    values.update(changes)
    return InfoPage(**values)  # type: ignore[arg-type]


def test_the_page_tells_pip_uv_and_poetry_the_index_url():
    text = render_info_page(make_page()).decode()
    url = "https://mirror.example.org/pypi/simple/"
    for snippet in (f"pip install --index-url {url} &lt;package&gt;", f"[global]\nindex-url = {url}</code>",
                    f'[[tool.uv.index]]\nname = "mirror"\nurl = "{url}"\ndefault = true',
                    f"export UV_INDEX_URL={url}", f"poetry source add --priority=primary mirror {url}"):
        assert snippet in text
    assert "trusted-host" not in text  # https needs none


def test_a_plain_http_mirror_is_a_trusted_host_in_pip_conf():
    page = make_page(index_url="http://10.0.0.5:8080/pypi/simple/", host="10.0.0.5:8080", scheme="http")
    assert "index-url = http://10.0.0.5:8080/pypi/simple/\ntrusted-host = 10.0.0.5:8080</code>" in (
        render_info_page(page).decode())


def test_the_page_shows_the_client_mode_last_sync_and_cache_fill():
    text = render_info_page(make_page()).decode()
    assert '<td id="client-ip">192.0.2.7</td>' in text
    assert '<span class="badge redirect">302 redirect</span>' in text
    assert "<code>https://files.example.org/packages</code>" in text
    assert "started 1970-01-01 00:33:20 UTC (2 min ago)" in text and "took 30.0 s" in text
    assert "last success 1970-01-01 00:17:40 UTC" in text and "(1 failed since)" in text
    assert "Cache management</th><td class=\"muted\">never ran" in text
    assert "<td>1</td><td>12</td><td>3.0 GiB</td><td>10.0 GiB</td><td>30%</td>" in text


def test_jobs_of_the_table_show_their_titles_and_a_job_only_on_record_its_name():
    ran = JobRun(3, "old_job", "node", 1000.0, 1060.0, "ok", {}, None)
    status = MirrorStatus(jobs=(JobStatus("new_job", ran, ran, ran, 0), JobStatus("old_job", ran, ran, ran, 0)),
                          tiers=(), job_titles={"new_job": f"New {SCRIPT}", "never_job": "Never run"})
    text = render_info_page(make_page(status=status)).decode()
    assert f'<tr id="job-new_job"><th>New {html.escape(SCRIPT)}</th>' in text
    assert '<tr id="job-old_job"><th>old_job</th>' in text
    assert 'Never run</th><td class="muted">never ran' in text
    assert "Cache management" not in text


def test_proxy_mode_names_the_packages_url():
    text = render_info_page(make_page(mode="proxy", miss_url="https://files.example.org/p")).decode()
    assert '<span class="badge proxy">proxy</span>' in text and "<code>https://files.example.org/p</code>" in text


def test_everything_shown_is_escaped():
    page = make_page(host=f"h{SCRIPT}", prefix=f"/p{SCRIPT}", client_ip=SCRIPT, miss_url=f"https://x/{SCRIPT}",
                     index_url=f"https://x/{SCRIPT}/simple/")
    text = render_info_page(page).decode()
    assert "<script" not in text
    assert html.escape(SCRIPT) in text


def test_an_unreadable_database_is_said_on_the_page():
    text = render_info_page(make_page(status=None, status_error="the database cannot be read")).decode()
    assert "unavailable: the database cannot be read" in text
    assert "pip install --index-url" in text


def test_the_hit_rate_of_24_hours_and_7_days_is_shown_with_the_chart():
    now = 1_796_292_000.0  # 2026-12-03 10:00 UTC
    hits = summarize_hits([HitCount(int(now), "local", 3, 3 * 2**20), HitCount(int(now) - 3 * 86400, "redirect", 1,
                                                                                  2**20)], now)
    status = MirrorStatus(jobs=(), tiers=(), hits=hits)
    text = render_info_page(make_page(status=status, now=now)).decode()
    assert ('<tr id="hits-day"><th>Last 24 hours</th><td>3</td><td>100.0 %</td><td>3.0 MiB</td>'
            "<td>100.0 %</td></tr>") in text
    assert ('<tr id="hits-week"><th>Last 7 days</th><td>4</td><td>75.0 %</td><td>4.0 MiB</td>'
            "<td>75.0 %</td></tr>") in text
    assert text.index('<section id="hit-rate">') < text.index('<svg id="hit-chart"') < text.index('id="hit-days"')


def test_without_hit_figures_the_page_has_no_hit_rate_section():
    assert 'id="hit-rate"' not in render_info_page(make_page()).decode()
    assert 'id="hit-rate"' not in render_info_page(make_page(status=None, status_error="down")).decode()


def test_the_pinned_sets_are_listed_with_files_bytes_and_how_many_are_local():
    sets = (PinnedSetSummary("ci", 1000.0, 12, 3 * 2**20, 12), PinnedSetSummary(f"x{SCRIPT}", 1000.0, 4, 2048, 1))
    text = render_info_page(make_page(status=MirrorStatus(jobs=(), tiers=(), pinned=sets))).decode()
    assert '<tr id="pinned-ci"><td>ci</td><td>12</td><td>3.0 MiB</td><td class="ok">12 of 12</td></tr>' in text
    assert '<td class="running">1 of 4</td>' in text and "<script" not in text
    assert 'id="pinned-sets"' not in render_info_page(make_page()).decode()
def test_the_page_says_since_when_the_index_history_is_complete():
    text = render_info_page(make_page()).decode()
    assert '<tr id="history-since"><th>Index history</th><td><span class="muted">not complete yet' in text
    status = MirrorStatus(jobs=(), tiers=(), history_since=1000.0)
    text = render_info_page(make_page(status=status)).decode()
    assert "<th>Index history</th><td>complete since 1970-01-01 00:16:40 UTC (18 min ago)</td>" in text
