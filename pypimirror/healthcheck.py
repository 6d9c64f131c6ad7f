"""``pypimirror healthcheck``: ask the running server's ``/healthz`` at the address it is configured on.

A container's health check runs inside the container, next to the server; it reads the same
configuration file, so the check follows ``listen`` and ``tls`` instead of assuming a port.
The server is asked on loopback when it listens on every interface, without any proxy of the
environment, and over HTTPS without verifying the certificate (it names the public host, and
the question is whether the server answers, not who it is).
"""

from __future__ import annotations

__all__ = ["check_health", "health_url"]

import http.client
import ssl
import urllib.error
import urllib.request

from pypimirror.config import Config

# Below the Dockerfile's HEALTHCHECK --timeout, so a hung server is reported, not killed.
_TIMEOUT_S = 4.0
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def health_url(config: Config) -> str:
    """The URL of ``/healthz`` on the server that ``config`` describes, as seen from its own host."""
    host, port = config.listen_address
    host = _LOOPBACK.get(host, host)
    scheme = "https" if config.tls.cert is not None else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def check_health(config: Config) -> tuple[bool, str]:
    """(healthy, what the server said or why it could not be asked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    url = health_url(config)
    try:
        with opener.open(url, timeout=_TIMEOUT_S) as response:
            body: bytes = response.read()
            return True, f"{url}: {response.status} {body.decode(errors='replace').strip()}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{url}: {exc}"
