"""Redirect-only routes: a subtree root without its slash, and ``{prefix}/web/`` to the upstream site.

``{prefix}/simple`` (likewise ``packages``, ``web``) answers 301 to the same path with a trailing
slash, and ``{prefix}/web/{rest}`` 302 to ``{pypi_url}/{rest}``; both keep the query. ``rest`` is
passed on as the client wrote it (still percent-encoded), so the upstream sees the same path; any
byte that may not stand in a URL (and a ``%`` that starts no escape) is percent-encoded, in the
path and in the query, so the ``Location`` is always plain ASCII.
"""

from __future__ import annotations

__all__ = ["SlashRedirectHandler", "WebRedirectHandler"]

import logging

from .base import PATH_SAFE, BaseHandler, RequestContext, percent_encode

logger = logging.getLogger(__name__)


class SlashRedirectHandler(BaseHandler):
    """301 to ``target`` (the requested path with its trailing slash)."""

    def initialize(self, *, context: RequestContext, target: str) -> None:
        self.init_base(context)
        self.target = target

    def get(self) -> None:
        self.redirect_to(self.target, 301)

    head = get


class WebRedirectHandler(BaseHandler):
    """302 from ``{route_base}{rest}`` to ``{pypi_url}/{rest}``; ``route_base`` ends with ``/``."""

    def initialize(self, *, context: RequestContext, route_base: str, pypi_url: str) -> None:
        self.init_base(context)
        self.route_base = route_base
        self.pypi_url = pypi_url

    def get(self) -> None:
        raw_rest = self.request.path[len(self.route_base) :]
        self.redirect_to(f"{self.pypi_url}/{percent_encode(raw_rest, PATH_SAFE)}", 302)

    head = get
