"""The HTTP server's routes and the long-lived services its handlers share.

:func:`make_app` is the mirror's route table: every URL under ``prefix`` (the simple index,
the JSON API, package files, the redirects to the upstream web pages, the info page) and the
two operator routes ``/metrics`` and ``/healthz``, each with the ``initialize`` arguments its
handler needs; nothing reaches a handler any other way, and no handler sees the
:class:`~pypimirror.config.Config`. :class:`Services` holds what one process builds once and
every request shares. :func:`upstream_client` is the one way the mirror's settings become an
outbound client, for the proxy route and for the jobs alike. Running the server (sockets,
TLS, signals, workers, draining) is :mod:`pypimirror.lifecycle`.
"""

from __future__ import annotations

__all__ = ["Services", "make_app", "upstream_client", "view_resolver"]

import re
from dataclasses import dataclass, field

from tornado.web import Application

from pypimirror.advisorypages import AdvisoryPages
from pypimirror.asof import AsOfViews, HistoryAccess
from pypimirror.buffers import BufferBudget
from pypimirror.clientip import IPModeMatcher
from pypimirror.config import Config, ServeConfig
from pypimirror.handlers.base import AccessLogSink, InFlight, NotFoundHandler, RequestContext, make_log_function
from pypimirror.handlers.cached import PageFiles
from pypimirror.handlers.files import PackageFileHandler, VoteSink
from pypimirror.handlers.info import InfoHandler
from pypimirror.handlers.jsonapi import JsonApiHandler
from pypimirror.handlers.ops import HealthHandler, MetricsHandler
from pypimirror.handlers.osv import OsvQueryBatchHandler, OsvQueryHandler, OsvVulnHandler
from pypimirror.handlers.redirects import SlashRedirectHandler, WebRedirectHandler
from pypimirror.handlers.simple import SimpleProjectHandler, SimpleRootHandler
from pypimirror.handlers.views import ViewJsonApiHandler, ViewPackageFileHandler, ViewProjectHandler, ViewRootHandler
from pypimirror.hitrate import HitCounter
from pypimirror.listedfiles import ListedFiles
from pypimirror.metrics import Metrics
from pypimirror.osvapi import AdvisoryLookup
from pypimirror.pagecache import PageCache
from pypimirror.status import StatusReader
from pypimirror.storage import RepoLayout
from pypimirror.tierlookup import TierLookup
from pypimirror.upstream import UpstreamClient, UpstreamSettings
from pypimirror.viewpages import ViewPages
from pypimirror.views import AgePolicy, ViewResolver


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived objects the handlers share, built once per process.

    ``status`` reads the database for the info page, ``/metrics`` and ``/healthz``; an app
    built without one (handler tests of other routes) has none of those routes. ``buffers``
    bounds the response buffers held for slow clients (:mod:`pypimirror.buffers`).
    ``advisories`` answers the OSV API routes; without it there are none. ``advisory_pages``
    applies the advisory policy to project pages and files (None: policy off, or audit only).
    ``views`` holds the rendered pages of the views (:mod:`pypimirror.viewpages`); :func:`make_app`
    makes one, flagging by ``advisory_pages``, when none is given.
    """

    pages: PageCache
    votes: VoteSink
    access_log: AccessLogSink
    in_flight: InFlight = field(default_factory=InFlight)
    metrics: Metrics = field(default_factory=Metrics)
    status: StatusReader | None = None
    buffers: BufferBudget = field(default_factory=lambda: BufferBudget(ServeConfig().buffer_budget))
    hits: HitCounter = field(default_factory=HitCounter)
    advisories: AdvisoryLookup | None = None
    advisory_pages: AdvisoryPages | None = None
    views: ViewPages | None = None
    history: HistoryAccess | None = None


def make_app(config: Config, services: Services) -> Application:
    """The Tornado application: every route of the mirror with the dependencies of its handler."""
    prefix = config.prefix
    p = re.escape(prefix)
    layout = RepoLayout(config.repo_path)
    context = RequestContext(config.trusted_proxies, services.in_flight, config.timeouts.write, services.buffers)
    base = {"context": context}
    ip_modes = IPModeMatcher(config.ip_modes)  # the file handler and the info page must agree
    pages = {**base, "pages": services.pages, "files": PageFiles.of(layout)}
    files: dict[str, object] = {
        **base,
        "route_base": f"{prefix}/packages/",
        "tiers": TierLookup(config.cache.tier_roots),
        "redirect_url": config.upstream.redirect_url,
        "ip_modes": ip_modes,
        "packages_url": config.upstream.packages_url,
        "upstream": upstream_client(config, attempts=1),
        "votes": services.votes,
        "listed": ListedFiles(config.repo_path, prefix),
        "metrics": services.metrics,
        "advisories": services.advisory_pages,
    }
    project_pages = {**pages, "prefix": prefix, "advisories": services.advisory_pages}
    documents = {**pages, "advisories": services.advisory_pages}
    web = {**base, "pypi_url": config.upstream.pypi_url}
    view_pages = services.views or ViewPages(
        prefix, config.upstream.packages_url, advisories=services.advisory_pages
    )
    resolver = view_resolver(config, services.history)
    viewing = {**pages, "views": view_pages, "resolver": resolver}
    # A view: its kind and its argument, read by the resolver; pip sends the '+' as %2B.
    v = rf"{p}/(?:\+|%2[Bb])([^/]+)/([^/]+)"
    # The two hot routes first: Tornado tries the patterns in order, and none of these overlap.
    routes = [
        (rf"{p}/packages/.*", PackageFileHandler, files),
        (rf"{p}/simple/([^/]+)(/?)", SimpleProjectHandler, project_pages),
        (rf"{p}/simple", SlashRedirectHandler, {**base, "target": f"{prefix}/simple/"}),
        (rf"{p}/simple/", SimpleRootHandler, pages),
        (rf"{p}/packages", SlashRedirectHandler, {**base, "target": f"{prefix}/packages/"}),
        (rf"{p}/web", SlashRedirectHandler, {**base, "target": f"{prefix}/web/"}),
        (rf"{p}/web/.*", WebRedirectHandler, {**web, "route_base": f"{prefix}/web/"}),
        (rf"{p}/pypi/([^/]+)/json/?", JsonApiHandler, {**documents, "canonical_url": prefix + "/pypi/{name}/json"}),
        (rf"{p}/([^/]+)/json/?", JsonApiHandler, {**documents, "canonical_url": prefix + "/{name}/json"}),
        (rf"{v}/packages/.*", ViewPackageFileHandler, {**files, **viewing, "prefix": prefix}),
        (rf"{v}/simple/([^/]+)(/?)", ViewProjectHandler, {**viewing, "prefix": prefix}),
        (rf"{v}/simple(/?)", ViewRootHandler, {**viewing, "prefix": prefix}),
        (rf"{v}/pypi/([^/]+)/json/?", ViewJsonApiHandler, {**viewing, "canonical_url": prefix + "/{view}/pypi/{name}/json"}),
        (rf"{v}/([^/]+)/json/?", ViewJsonApiHandler, {**viewing, "canonical_url": prefix + "/{view}/{name}/json"}),
    ]
    if services.advisories is not None:
        osv = {**base, "advisories": services.advisories}
        routes += [
            (rf"{p}/osv/v1/query", OsvQueryHandler, osv),
            (rf"{p}/osv/v1/querybatch", OsvQueryBatchHandler, osv),
            (rf"{p}/osv/v1/vulns/([^/]+)", OsvVulnHandler, osv),
        ]
    if services.status is not None:
        info = {
            **base,
            "prefix": prefix,
            "status": services.status,
            "modes": ip_modes,
            "packages_url": config.upstream.packages_url,
            "redirect_url": config.upstream.redirect_url,
            "views": tuple((view.label, view.describe()) for view in resolver.named.values()),
        }
        routes += [
            (p, SlashRedirectHandler, {**base, "target": f"{prefix}/"}),
            (rf"{p}/", InfoHandler, info),
            (r"/metrics", MetricsHandler, {**base, "metrics": services.metrics, "status": services.status}),
            (r"/healthz", HealthHandler, {**base, "status": services.status}),
        ]
    return Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=base,
        log_function=make_log_function(
            services.access_log, services.metrics, file_handlers=(PackageFileHandler,), hits=services.hits
        ),
    )


def view_resolver(config: Config, history: HistoryAccess | None = None) -> ViewResolver:
    """The views the URLs may name: every cooldown, the configured named views, and every
    moment of the index history when there is one to read."""
    named = {
        name: AgePolicy(label=f"+view/{name}", min_age=view.min_age, not_after=view.not_after, exempt=view.exempt)
        for name, view in config.views.items()
    }
    return ViewResolver(named, AsOfViews(history) if history is not None else None)


def upstream_client(config: Config, *, attempts: int) -> UpstreamClient:
    """The outbound client for the configured upstream: its proxy, user agent and time limits.

    The jobs pass ``sync.retry`` attempts. The proxy route passes 1: its client retries by
    itself, and a body already begun cannot be restarted. Call it after
    :func:`~pypimirror.upstream.configure_curl_client`.
    """
    timeout = config.timeouts.upstream.total_seconds()
    settings = UpstreamSettings(
        user_agent=config.sync.user_agent,
        proxy=config.upstream.proxy,
        connect_timeout=timeout,
        stall_timeout=timeout,
        attempts=attempts,
    )
    return UpstreamClient(settings)
