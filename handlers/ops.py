"""Routes for whoever runs the mirror: ``/metrics`` for Prometheus and ``/healthz`` for a load balancer.

``/metrics`` answers even while the database is down (then without the job and tier figures,
which come from it). ``/healthz`` is 200 ``ok`` when the database hands back its schema version
(a deleted, replaced or corrupt SQLite file fails) and ``repo_path`` takes a new file, each within
a couple of seconds; otherwise 503 with one line per failed check. Neither is ever cached by a client or a proxy.
"""

from __future__ import annotations

__all__ = ["HEALTH_TIMEOUT_S", "HealthHandler", "MetricsHandler"]

import logging

from pypimirror.errors import DatabaseError
from pypimirror.metrics import CONTENT_TYPE, Metrics
from pypimirror.status import StatusReader

from .base import BaseHandler, RequestContext

logger = logging.getLogger(__name__)

#: How long each health check may take before it counts as failed.
HEALTH_TIMEOUT_S = 2.0


class MetricsHandler(BaseHandler):
    """``GET /metrics``: every worker's counters summed, plus the database's job and tier figures."""

    def initialize(self, *, context: RequestContext, metrics: Metrics, status: StatusReader) -> None:
        self.init_base(context)
        self.metrics = metrics
        self.status = status

    async def get(self) -> None:
        try:
            status = await self.status.snapshot()
        except DatabaseError as exc:
            logger.warning("/metrics without job and tier figures: %s", exc)
            status = None
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        await self.send_body(self.metrics.render(status))


class HealthHandler(BaseHandler):
    """``GET``/``HEAD /healthz``: 200 ``ok``, or 503 with the reasons."""

    def initialize(self, *, context: RequestContext, status: StatusReader) -> None:
        self.init_base(context)
        self.status = status

    async def get(self) -> None:
        problems = await self.status.check_health(HEALTH_TIMEOUT_S)
        if problems:
            logger.warning("health check failed: %s", "; ".join(problems))
            self.set_status(503)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        await self.send_body("".join(f"{problem}\n" for problem in problems).encode() if problems else b"ok\n")

    async def head(self) -> None:
        await self.get()
