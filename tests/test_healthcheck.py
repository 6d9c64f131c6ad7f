"""``pypimirror healthcheck`` asks /healthz where the configuration says the server listens."""

from __future__ import annotations

from typing import Any

import pytest

from pypimirror.configreader import parse_config
from pypimirror.healthcheck import health_url

BASE: dict[str, Any] = {
    "repo_path": "/srv/repo",
    "upstream": {"pypi_url": "https://example.org", "packages_url": "https://example.org/packages"},
    "cache": {"size_limit": "1g"},
}


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        (":8080", "http://127.0.0.1:8080/healthz"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000/healthz"),
        ("[::]:8080", "http://[::1]:8080/healthz"),
        ("127.0.0.2:8080", "http://127.0.0.2:8080/healthz"),
        ("[::1]:81", "http://[::1]:81/healthz"),
    ],
)
def test_the_url_is_the_listen_address_with_wildcards_on_loopback(listen: str, url: str) -> None:
    assert health_url(parse_config({**BASE, "listen": listen})) == url


def test_the_url_is_https_when_the_server_has_a_certificate() -> None:
    config = parse_config({**BASE, "listen": ":8443", "tls": {"cert": "/etc/c.pem", "key": "/etc/k.pem"}})
    assert health_url(config) == "https://127.0.0.1:8443/healthz"
