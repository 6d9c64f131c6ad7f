"""The info page at ``{prefix}/``: how to point pip, uv and poetry here, who you are, how the mirror is doing.

:func:`render_info_page` is a pure function of an :class:`InfoPage`; every value it shows is
HTML-escaped, whatever its source. :func:`public_origin` decides which scheme and host the
snippets name: ``X-Forwarded-Host``/``X-Forwarded-Proto`` count only when the request came from
a trusted proxy (the seed believed any client), and a host that is not a plain
``name[:port]``, ``IPv4[:port]`` or ``[IPv6][:port]`` is never shown: the server's own address is.
"""

from __future__ import annotations

__all__ = ["InfoPage", "is_valid_host", "public_origin", "render_info_page"]

import html
import logging
import re
import time
from dataclasses import dataclass

from pypimirror.byteunits import format_bytes
from pypimirror.config import IPMode
from pypimirror.hitchart import format_rate, render_hit_chart
from pypimirror.queries import JobRun
from pypimirror.status import ADVISORY_JOB, JobStatus, MirrorStatus, TierFill

logger = logging.getLogger(__name__)

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?")
_MAX_HOST_LENGTH = 260
_MAX_ERROR_LENGTH = 500
_MAX_COUNTS = 10


@dataclass(frozen=True, slots=True)
class InfoPage:
    """Everything the page shows. ``index_url`` ends with ``/simple/``; ``client_ip`` is "" if unknown.

    ``miss_url`` is where a file the mirror does not hold comes from for this client: the
    upstream's packages URL (proxy mode) or its redirect URL (302). ``status`` is None when the
    database could not be read; ``status_error`` then says why. ``views`` are the named views,
    each as (label such as ``+view/stable``, what it leaves out).
    """

    index_url: str
    host: str
    scheme: str
    prefix: str
    client_ip: str
    mode: IPMode
    miss_url: str
    now: float
    status: MirrorStatus | None
    status_error: str | None = None
    views: tuple[tuple[str, str], ...] = ()


def is_valid_host(value: str) -> bool:
    """Whether ``value`` is a host (and optional port) fit to stand in a URL as it is."""
    return len(value) <= _MAX_HOST_LENGTH and _HOST_RE.fullmatch(value) is not None


def public_origin(
    *,
    tls: bool,
    host: str | None,
    forwarded_host: str | None,
    forwarded_proto: str | None,
    from_trusted_proxy: bool,
    own_address: str,
) -> tuple[str, str]:
    """``(scheme, host)`` the client reached us at, for the URLs the page shows.

    A trusted proxy's first ``X-Forwarded-Proto`` (``http`` or ``https``) and first
    ``X-Forwarded-Host`` win; otherwise the connection says the scheme and the ``Host``
    header the host. An invalid host is replaced by ``own_address`` (the socket's address).
    """
    scheme = "https" if tls else "http"
    candidates = [host]
    if from_trusted_proxy:
        proto = _first(forwarded_proto).lower()
        if proto in ("http", "https"):
            scheme = proto
        candidates.insert(0, _first(forwarded_host))
    chosen = next((candidate for candidate in candidates if candidate and is_valid_host(candidate)), own_address)
    return scheme, chosen


def _first(header: str | None) -> str:
    """The first entry of a comma-separated forwarding header (the one the client-facing proxy set)."""
    return (header or "").split(",", 1)[0].strip()


def render_info_page(page: InfoPage) -> bytes:
    """The page as UTF-8 HTML (plain markup, a little inline CSS, no script)."""
    e = _escape
    title = f"PyPI mirror — {e(page.host)}"
    body = "\n".join(
        [
            f"<header><h1>PyPI mirror</h1><p>{e(page.host)}</p></header>",
            _usage_section(page),
            _views_section(page),
            _client_section(page),
            _status_section(page),
            _advisories_section(page),
            _hits_section(page),
            _pinned_section(page),
            _endpoints_section(page),
        ]
    )
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style>
</head>
<body>
{body}
</body>
</html>
"""
    return document.encode("utf-8")


_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
header h1{margin-bottom:0}header p{margin-top:.2rem;color:#666}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
pre{background:#f5f5f5;border:1px solid #e2e2e2;border-radius:4px;padding:.6rem .8rem;overflow-x:auto}
code{font-family:ui-monospace,monospace;font-size:.92em}
table{border-collapse:collapse}td,th{text-align:left;padding:.25rem 1rem .25rem 0;vertical-align:top}
.badge{display:inline-block;padding:0 .5rem;border-radius:.6rem;color:#fff;font-size:.85em}
.redirect{background:#2a6bb3}.proxy{background:#2f8a4c}.ok{color:#2f8a4c}.failed,.interrupted{color:#b3261e}
.running{color:#a86b00}.muted{color:#666}
""".strip()


def _usage_section(page: InfoPage) -> str:
    e = _escape
    url = page.index_url
    trusted = f"\ntrusted-host = {page.host}" if page.scheme == "http" else ""  # pip refuses plain http otherwise
    return f"""<section id="usage">
<h2>Use this mirror</h2>
<p>pip, one command:</p>
<pre><code id="pip-command">pip install --index-url {e(url)} &lt;package&gt;</code></pre>
<p>pip, always: <code>pip.conf</code> (<code>~/.config/pip/pip.conf</code>,
or <code>/etc/pip.conf</code> for everyone):</p>
<pre><code id="pip-conf">[global]
index-url = {e(url)}{e(trusted)}</code></pre>
<p>uv, in <code>pyproject.toml</code>:</p>
<pre><code id="uv-index">[[tool.uv.index]]
name = "mirror"
url = "{e(url)}"
default = true</code></pre>
<p>uv, for one shell:</p>
<pre><code id="uv-env">export UV_INDEX_URL={e(url)}</code></pre>
<p>Poetry, in a project:</p>
<pre><code id="poetry">poetry source add --priority=primary mirror {e(url)}</code></pre>
</section>"""


def _views_section(page: InfoPage) -> str:
    """How to install through a view: each one is a whole index at its own URL."""
    e = _escape
    base = page.index_url.removesuffix("simple/")
    cooldown = f"{base}+cooldown/7d/simple/"
    rows = [f"<tr><td><code>{e(base)}+cooldown/&lt;duration&gt;/simple/</code></td>"
            "<td>only files uploaded at least that long ago (<code>30m</code>, <code>12h</code>, <code>7d</code>, "
            "<code>2w</code>)</td></tr>"]
    rows.append(f"<tr><td><code>{e(base)}+asof/&lt;timestamp&gt;/simple/</code></td>"
                "<td>the index as it was at that moment, yanks, removals and quarantines included "
                "(<code>2026-06-01T12:00:00Z</code> or <code>2026-06-01</code>, UTC; within the index history)</td></tr>")
    rows += [f'<tr id="view-{e(label.rpartition("/")[2])}"><td><code>{e(base)}{e(label)}/simple/</code></td>'
             f"<td>{e(rule)}</td></tr>" for label, rule in page.views]
    joined = "\n".join(rows)
    return f"""<section id="views">
<h2>Views</h2>
<p>Each view is a complete index at its own URL, for every client alike: it leaves out files too new
for its rule (and files without an upload time), and refuses their downloads with 403 and the reason.</p>
<table id="view-list">
{joined}
</table>
<p>A seven-day cooldown with pip:</p>
<pre><code id="view-pip">pip install --index-url {e(cooldown)} &lt;package&gt;</code></pre>
<p>with uv:</p>
<pre><code id="view-uv">export UV_INDEX_URL={e(cooldown)}</code></pre>
<p>with Poetry:</p>
<pre><code id="view-poetry">poetry source add --priority=primary mirror-cooldown {e(cooldown)}</code></pre>
</section>"""


def _client_section(page: InfoPage) -> str:
    e = _escape
    source = f"<code>{e(page.miss_url)}</code>"
    if page.mode == "proxy":
        badge = '<span class="badge proxy">proxy</span>'
        detail = f"Packages the mirror does not hold are fetched from {source} by the mirror and streamed to you."
    else:
        badge = '<span class="badge redirect">302 redirect</span>'
        detail = (f"Packages the mirror does not hold are a redirect to {source}, "
                  "which your client then downloads directly.")
    return f"""<section id="client">
<h2>You</h2>
<table>
<tr><th>Your IP</th><td id="client-ip">{e(page.client_ip or "unknown")}</td></tr>
<tr><th>Your access mode</th><td id="client-mode">{badge}&nbsp;{detail}</td></tr>
</table>
</section>"""


def _status_section(page: InfoPage) -> str:
    e = _escape
    rows = [f'<tr><th>Server time</th><td>{e(_format_time(page.now))}</td></tr>']
    if page.status is None:
        reason = page.status_error or "unknown error"
        rows.append(f'<tr><th>Jobs and cache</th><td class="failed">unavailable: {e(reason)}</td></tr>')
        return _status_table(rows, "")
    titles = page.status.job_titles
    for name, title in titles.items():
        if page.status.job(name) is None:
            rows.append(f'<tr><th>{e(title)}</th><td class="muted">never ran</td></tr>')
    for job in page.status.jobs:
        rows.append(_job_row(job, titles.get(job.name, job.name), page.now))
    rows.append(_history_row(page.status.history_since, page.now))
    return _status_table(rows, _tiers_table(page.status.tiers))


def _history_row(since: float | None, now: float) -> str:
    """Since when the index history (what ``+asof`` views show) is complete."""
    e = _escape
    if since is None:
        text = '<span class="muted">not complete yet: it starts when an index sync completes</span>'
    else:
        text = f"complete since {e(_format_time(since))} ({e(_format_age(now - since))} ago)"
    return f'<tr id="history-since"><th>Index history</th><td>{text}</td></tr>'



def _status_table(rows: list[str], after: str) -> str:
    joined = "\n".join(rows)
    return f"""<section id="status">
<h2>Mirror status</h2>
<table>
{joined}
</table>
{after}
</section>"""


def _job_row(job: JobStatus, title: str, now: float) -> str:
    e = _escape
    last = job.last_run
    outcome = last.outcome or "running"
    parts = [
        f'<span class="{outcome}">{e(outcome)}</span>, started {e(_format_time(last.started_at))} '
        f'({e(_format_age(now - last.started_at))} ago)'
    ]
    if last.finished_at is not None:
        parts[0] += ","
        parts.append(f"took {e(_format_duration(last.finished_at - last.started_at))}")
    counts = _format_counts(last)
    if counts:
        parts.append(f'<span class="muted">· {e(counts)}</span>')
    if last.error:
        parts.append(f'<br><span class="failed">error: {e(last.error[:_MAX_ERROR_LENGTH])}</span>')
    if last.outcome != "ok":
        success = job.last_success
        if success is not None and success.finished_at is not None:
            parts.append(f"<br>last success {e(_format_time(success.finished_at))}")
        else:
            parts.append("<br>no successful run yet")
        if job.failures_since_success:
            parts.append(f"({job.failures_since_success} failed since)")
    return f'<tr id="job-{e(job.name)}"><th>{e(title)}</th><td>{" ".join(parts)}</td></tr>'


def _tiers_table(tiers: tuple[TierFill, ...]) -> str:
    e = _escape
    rows = []
    for tier in tiers:
        share = f"{tier.bytes / tier.limit:.0%}" if tier.limit else "–"
        rows.append(
            f"<tr><td>{tier.index + 1}</td><td>{tier.files:,}</td><td>{e(format_bytes(tier.bytes))}</td>"
            f"<td>{e(format_bytes(tier.limit))}</td><td>{share}</td></tr>"
        )
    joined = "\n".join(rows)
    return f"""<h3>Cache fill</h3>
<table id="tiers">
<tr><th>Tier</th><th>Files</th><th>Used</th><th>Limit</th><th>Full</th></tr>
{joined}
</table>"""


def _advisories_section(page: InfoPage) -> str:
    """The stored OSV advisories, their last sync, and the files the policy flagged and blocked."""
    if page.status is None or page.status.advisories is None:
        return ""
    e = _escape
    counts = page.status.advisories
    job = page.status.job(ADVISORY_JOB)
    success = job.last_success if job is not None else None
    synced = "never" if success is None or success.finished_at is None else _format_time(success.finished_at)
    files = page.status.advisory_files()
    flagged, blocked = ("–", "–") if files is None else (f"{files[0]:,}", f"{files[1]:,}")
    stored = f"{counts.total:,} ({counts.withdrawn:,} withdrawn, {counts.malicious:,} malicious packages)"
    return f"""<section id="advisories">
<h2>Advisories</h2>
<table>
<tr><th>Stored</th><td id="advisory-count">{stored}</td></tr>
<tr><th>Last sync</th><td id="advisory-sync">{e(synced)}</td></tr>
<tr><th>Files flagged</th><td id="advisory-flagged">{flagged}</td></tr>
<tr><th>Files blocked</th><td id="advisory-blocked">{blocked}</td></tr>
</table>
<p>Audit with <code>pip-audit -s osv --osv-url {e(page.scheme)}://{e(page.host)}{e(page.prefix)}/osv/v1/query</code></p>
</section>"""


def _hits_section(page: InfoPage) -> str:
    """The request and byte hit rate of the last 24 hours and 7 days, and the chart of the last 7 days."""
    if page.status is None or page.status.hits is None:
        return ""
    e = _escape
    hits = page.status.hits
    rows = []
    for key, title, window in (("day", "Last 24 hours", hits.last_day), ("week", "Last 7 days", hits.last_week)):
        rows.append(
            f'<tr id="hits-{key}"><th>{title}</th><td>{window.requests:,}</td>'
            f"<td>{e(format_rate(window.request_rate))}</td><td>{e(format_bytes(window.bytes))}</td>"
            f"<td>{e(format_rate(window.byte_rate))}</td></tr>"
        )
    joined = "\n".join(rows)
    return f"""<section id="hit-rate">
<h2>Hit rate</h2>
<p>Downloads of package files (GET, not <code>.metadata</code>, not bots) served from this node's cache,
out of all downloads it answered (the others were redirected or proxied to the upstream).</p>
<table id="hits">
<tr><th></th><th>Downloads</th><th>Request hit rate</th><th>Bytes</th><th>Byte hit rate</th></tr>
{joined}
</table>
{render_hit_chart(hits.days)}
</section>"""


def _pinned_section(page: InfoPage) -> str:
    """The pinned sets: files kept whatever the votes say, and how many of them this node holds."""
    if page.status is None or not page.status.pinned:
        return ""
    e = _escape
    rows = "\n".join(
        f'<tr id="pinned-{e(s.name)}"><td>{e(s.name)}</td><td>{s.files:,}</td><td>{e(format_bytes(s.bytes))}</td>'
        f'<td class="{"ok" if s.local == s.files else "running"}">{s.local:,} of {s.files:,}</td></tr>'
        for s in page.status.pinned
    )
    return f"""<section id="pinned-sets">
<h2>Pinned sets</h2>
<p>Files of lockfiles kept in the cache whatever the votes say (<code>pypimirror pin</code>).</p>
<table id="pinned">
<tr><th>Set</th><th>Files</th><th>Bytes</th><th>Local</th></tr>
{rows}
</table>
</section>"""


def _endpoints_section(page: InfoPage) -> str:
    p = _escape(page.prefix)
    return f"""<section id="endpoints">
<h2>Endpoints</h2>
<table>
<tr><td><code>{p}/simple/</code></td><td>the index (PEP 503 HTML, PEP 691 JSON)</td></tr>
<tr><td><code>{p}/simple/&lt;project&gt;/</code></td><td>a project's files</td></tr>
<tr><td><code>{p}/packages/…</code></td><td>package files</td></tr>
<tr><td><code>{p}/pypi/&lt;project&gt;/json</code></td><td>a project's JSON metadata</td></tr>
<tr><td><code>{p}/web/…</code></td><td>a redirect to the upstream's web pages</td></tr>
<tr><td><code>{p}/osv/v1/query</code>, <code>{p}/osv/v1/querybatch</code></td><td>OSV API: the stored advisories</td></tr>
<tr><td><code>/metrics</code>, <code>/healthz</code></td><td>Prometheus metrics; health check</td></tr>
</table>
</section>"""


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _format_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _format_age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _format_counts(run: JobRun) -> str:
    items = sorted(run.counts.items())[:_MAX_COUNTS]
    return ", ".join(f"{key} {value}" for key, value in items)
