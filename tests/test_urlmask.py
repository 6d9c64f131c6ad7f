"""Masking the password of a URL: the one rule for proxy, upstream and database URLs."""

from __future__ import annotations

import pytest

from pypimirror.urlmask import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("socks5h://bob:pw@127.0.0.1:1080", "socks5h://bob:***@127.0.0.1:1080"),
        ("https://bob:p%40ss:w@example.org/simple/?q=1", "https://bob:***@example.org/simple/?q=1"),
        ("http://:pw@example.org/", "http://:***@example.org/"),
        ("http://a:b@c@example.org/x", "http://a:***@example.org/x"),
        ("postgresql+psycopg://u:p%40ss@127.0.0.1/db", "postgresql+psycopg://u:***@127.0.0.1/db"),
        ("postgresql://u:s3cret@127.0.0.1:notaport/db", "postgresql://u:***@127.0.0.1:notaport/db"),
    ],
)
def test_the_password_is_replaced_and_the_rest_kept_as_written(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://u:secret@[::1/", "http://u:***@[::1/"),
        ("https://u:secret@[::1", "https://u:***@[::1"),
        ("post gres://u:s3cret@h/db", "post gres://u:***@h/db"),
        ("http://u:s3cret@exa mple.org:99999/", "http://u:***@exa mple.org:99999/"),
    ],
)
def test_a_url_that_does_not_parse_is_masked_all_the_same(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3128",
        "http://bob@example.org/",
        "http://bob@127.0.0.1:3128/",
        "sqlite:////srv/mirror/pypi-mirror.db",
        "http://127.0.0.1:3128/a:b@c",
        "http://[::1/",
        "not a url",
        "",
    ],
)
def test_a_url_without_a_password_is_unchanged(url: str) -> None:
    assert mask_url(url) == url
