"""A bare Tornado server: the floor that the mirror's own logic is measured against.

It serves fixed URL paths with bytes read into memory at start-up and answers fixed 302s,
with no negotiation, no path checks, no votes and no access log; what is left is Tornado's
HTTP and RequestHandler cost. Bodies over 1 MiB go out in 1 MiB slices with a flush each,
as any streaming handler must, so 16 clients never make it build 16 copies of 50 MiB.

Run as ``python _bare_tornado.py SPEC.json``; the spec holds ``port``, ``workers``,
``bodies`` (``{url_path: [content_type, file]}``) and ``redirects`` (``{url_path: url}``).
Several workers share the port through ``fork_processes``, as in the performance anchors.
"""

from __future__ import annotations

__all__ = ["main"]

import asyncio
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.process
import tornado.web

logger = logging.getLogger(__name__)

_SLICE = 1 << 20


class MemoryBodyHandler(tornado.web.RequestHandler):
    """Writes one body held in memory."""

    def initialize(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type

    async def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        if len(self.body) <= _SLICE:
            self.write(self.body)
            return
        self.set_header("Content-Length", len(self.body))
        view = memoryview(self.body)
        try:
            for start in range(0, len(view), _SLICE):
                self.write(bytes(view[start : start + _SLICE]))
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass  # wrk hung up at the end of its run


class FixedRedirectHandler(tornado.web.RequestHandler):
    """Answers 302 to one fixed URL."""

    def initialize(self, url: str) -> None:
        self.url = url

    def get(self) -> None:
        self.redirect(self.url, permanent=False)


def make_app(spec: dict[str, Any]) -> tornado.web.Application:
    routes: list[Any] = []
    for path, (content_type, file) in spec["bodies"].items():
        body = Path(file).read_bytes()
        routes.append((re.escape(path), MemoryBodyHandler, {"body": body, "content_type": content_type}))
    for path, url in spec["redirects"].items():
        routes.append((re.escape(path), FixedRedirectHandler, {"url": url}))
    return tornado.web.Application(routes, log_function=lambda handler: None)


async def _serve(app: tornado.web.Application, sockets: list[Any]) -> None:
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    sockets = tornado.netutil.bind_sockets(spec["port"], address="127.0.0.1", backlog=4096)
    if spec["workers"] > 1:
        # Fork before any IOLoop exists; each child then builds its own app and loop.
        tornado.process.fork_processes(spec["workers"], max_restarts=0)
    asyncio.run(_serve(make_app(spec), sockets))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
