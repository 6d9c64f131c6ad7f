"""Who the client is: its address behind trusted proxies, its vote network, its IP mode.

Pure functions of the peer address, the forwarding headers and the configuration. Forwarding
headers are believed only when the peer is a trusted proxy, hostile headers never raise and cost
a bounded amount of work, and an IPv4-mapped IPv6 address is the IPv4 address everywhere.
"""

from __future__ import annotations

__all__ = ["MAX_FORWARDED_HOPS", "IPAddress", "IPModeMatcher", "network_prefix", "resolve_client_ip"]

import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import TypeAlias

from pypimirror.config import IPMode, IPModesConfig, IPNetwork

logger = logging.getLogger(__name__)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: How many ``X-Forwarded-For`` entries are walked, from the right; a real proxy chain is short.
MAX_FORWARDED_HOPS = 64

# The longest text form of an address we parse (IPv6 with an embedded IPv4 is 45 characters);
# anything longer is garbage and is not handed to the parser.
_MAX_ADDRESS_LENGTH = 45
_MAX_PEER_LENGTH = 128
_PEER_WITH_PORT_RE = re.compile(r"\[([^\]]*)\](?::[0-9]{1,5})?|([0-9.]+):[0-9]{1,5}")


def resolve_client_ip(
    peer: str | None,
    forwarded_for: str | None,
    real_ip: str | None,
    trusted: Sequence[IPNetwork],
) -> IPAddress | None:
    """The client's address: the peer, or what a trusted proxy peer says the client is.

    ``peer`` is the socket's address (a bare IP, an IPv6 with a ``%zone``, or ``host:port`` /
    ``[v6]:port``); if it does not parse the client is unknown (None). An untrusted peer is the
    client. For a trusted peer ``X-Forwarded-For`` is walked right to left (at most
    :data:`MAX_FORWARDED_HOPS` entries; empty ones are no hop and are skipped) and the first
    untrusted entry is the client. An entry is an address in any form the peer may have.

    An entry that does not parse (``unknown``, an obfuscated ``_node``, garbage) ends the walk:
    it was written by the trusted hop to its right, which could not or would not say who it
    talked to, so nothing to its left can be believed, and the client is that hop itself (the
    last address walked, or the peer when the entry is the rightmost). Skipping it instead
    would believe whatever the client put in front of it. A walk through trusted entries only
    falls back to a parseable ``X-Real-IP``, and failing that to the peer.
    """
    remote = _parse_peer(peer)
    if remote is None or not _is_trusted(remote, trusted):
        return remote
    if forwarded_for:
        last_hop = remote
        for entry in reversed(forwarded_for.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]):
            if not entry.strip(" \t"):
                continue  # an empty list element (RFC 9110 §5.6.1)
            address = _parse_peer(entry)
            if address is None:
                return last_hop
            if not _is_trusted(address, trusted):
                return address
            last_hop = address
    if real_ip:
        address = _parse_address(real_ip)
        if address is not None:
            return address
    return remote


def network_prefix(ip: IPAddress) -> str:
    """The client's network for vote deduplication: IPv4 /24 (``1.2.3.0``), IPv6 /48 (``2001:db8:1::``)."""
    ip = _unmapped(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(ip) & ~0xFF))
    return str(ipaddress.IPv6Address(int(ip) & ~((1 << 80) - 1)))


class IPModeMatcher:
    """Picks the fallback mode (302 or proxy) of a client from ``ip_modes``; built once, used per request."""

    def __init__(self, config: IPModesConfig) -> None:
        self._default: IPMode = config.default
        self._rules = tuple((rule.network, rule.mode) for rule in config.rules)

    def mode_for(self, ip: IPAddress | None) -> IPMode:
        """The mode of the first rule whose network holds ``ip``; the default for no match or no IP."""
        if ip is None:
            return self._default
        ip = _unmapped(ip)
        for network, mode in self._rules:
            if ip.version == network.version and ip in network:
                return mode
        return self._default


def _unmapped(ip: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` as ``a.b.c.d``; every other address unchanged."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip.version == network.version and ip in network for network in trusted)


def _parse_address(text: str) -> IPAddress | None:
    """A plain IP from a forwarding header (no port, zone or brackets), unmapped; None if it is not one."""
    text = text.strip()
    if len(text) > _MAX_ADDRESS_LENGTH or "%" in text:
        return None
    try:
        return _unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None


def _parse_peer(peer: str | None) -> IPAddress | None:
    """The IP of a socket peer or of an ``X-Forwarded-For`` entry: a bare IP, ``v4:port``,
    ``[v6]`` or ``[v6]:port``, without port or IPv6 zone (a zone names an interface of the
    host that saw the address, not the client); None if it is none of these."""
    if not peer or len(peer) > _MAX_PEER_LENGTH:
        return None
    host = peer.strip()
    match = _PEER_WITH_PORT_RE.fullmatch(host)
    if match is not None:
        host = match[1] if match[1] is not None else match[2]
    return _parse_address(host.partition("%")[0])
