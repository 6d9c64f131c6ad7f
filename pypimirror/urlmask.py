"""One way to show a URL without its password, in logs, error messages and ``check-config``.

Proxy, upstream and database URLs all carry credentials as ``user:password@`` in front of the
host, so one rule serves them all. It reads the text instead of parsing the URL: a URL too
broken to parse (often the very reason it is in an error message) is masked all the same, and
everything but the password stays exactly as the operator wrote it, so they recognise it.
"""

from __future__ import annotations

__all__ = ["mask_url"]

import re

# scheme://user:password@ — the password runs to the last "@" before the path, query or fragment,
# so an unencoded "@" or ":" in it is hidden too. A user without a password has nothing to hide.
_CREDENTIALS = re.compile(r"^(?P<user>[^:/?#]*://[^:/?#@]*:)[^/?#]*@")


def mask_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` replaced by ``***``; it never fails.

    >>> mask_url("socks5h://bob:secret@127.0.0.1:1080")
    'socks5h://bob:***@127.0.0.1:1080'
    """
    return _CREDENTIALS.sub(r"\g<user>***@", url, count=1)
