"""Client address behind trusted proxies, vote network prefixes, and per-network IP modes."""

from __future__ import annotations

import ipaddress
import time

import pytest

from pypimirror.clientip import IPModeMatcher, network_prefix, resolve_client_ip
from pypimirror.config import IPModeRule, IPModesConfig, IPNetwork

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


RESOLVE_CASES = [
    # the seed's acceptance cases (trusted 10.0.0.0/8)
    ("10.0.0.1", "1.1.1.1, 2.2.2.2, 10.0.0.5", None, "2.2.2.2"),
    # (the seed believed 1.1.1.1 here; an unparseable entry now ends the walk, see below)
    ("10.0.0.1", "1.1.1.1, junk", None, "10.0.0.1"),
    ("10.0.0.1", "10.0.0.7, 10.0.0.5", "3.3.3.3", "3.3.3.3"),
    ("10.0.0.1", None, None, "10.0.0.1"),
    ("5.5.5.5", "1.1.1.1", None, "5.5.5.5"),
    # untrusted peers: headers are never believed
    ("5.5.5.5", None, "3.3.3.3", "5.5.5.5"),
    ("2001:db8::1", "1.1.1.1", "3.3.3.3", "2001:db8::1"),
    # trusted peer, nothing usable in the headers
    ("10.0.0.1", "", "", "10.0.0.1"),
    ("10.0.0.1", "junk, , 999.1.1.1", "not-an-ip", "10.0.0.1"),
    ("10.0.0.1", "10.0.0.2, , ", "3.3.3.3", "3.3.3.3"),  # empty list elements are no hop
    ("10.0.0.1", "10.1.1.1", " 3.3.3.3 ", "3.3.3.3"),
    # XFF wins over X-Real-IP when it names an untrusted hop
    ("10.0.0.1", "4.4.4.4", "3.3.3.3", "4.4.4.4"),
    # IPv4-mapped addresses are IPv4, for matching and in the result
    ("::ffff:10.0.0.1", "::ffff:1.2.3.4", None, "1.2.3.4"),
    ("::ffff:5.5.5.5", "1.1.1.1", None, "5.5.5.5"),
    ("10.0.0.1", "1.1.1.1, ::ffff:10.0.0.9", None, "1.1.1.1"),
    # IPv6 proxies and clients
    ("fd00::1", "2001:db8:1::5, fd00::2", None, "2001:db8:1::5"),
    ("fd00::1", "2001:DB8:0:0::7", None, "2001:db8::7"),
    ("fe80::1%eth0", None, None, "fe80::1"),
    # peer given with a port
    ("10.0.0.1:4711", "1.1.1.1", None, "1.1.1.1"),
    ("[fd00::1]:443", "1.1.1.1", None, "1.1.1.1"),
    ("[2001:db8::9]", "1.1.1.1", None, "2001:db8::9"),
    # entries in every form a proxy writes: ip:port, [v6], [v6]:port, a zone
    ("10.0.0.1", "1.1.1.1, 2.2.2.2:80", None, "2.2.2.2"),
    ("10.0.0.1", "1.1.1.1, 10.0.0.2:80", None, "1.1.1.1"),
    ("10.0.0.1", "1.1.1.1, [2001:db8::1]:443", None, "2001:db8::1"),
    ("10.0.0.1", "1.1.1.1, [fd00::2]:443, [fd00::3]", None, "1.1.1.1"),
    ("10.0.0.1", "1.1.1.1, [2001:db8::1]", None, "2001:db8::1"),
    ("10.0.0.1", "1.1.1.1, 2001:db8::2%eth0", None, "2001:db8::2"),
    ("10.0.0.1", "1.1.1.1, [::ffff:10.0.0.3]:80", None, "1.1.1.1"),
    # an entry that does not parse ends the walk: what stands left of it is the client's word,
    # and the client is the trusted hop that wrote it (the entry's right neighbour, or the peer)
    ("10.0.0.1", "6.6.6.6, unknown", None, "10.0.0.1"),
    ("10.0.0.1", "6.6.6.6, unknown, 10.0.0.2", None, "10.0.0.2"),
    ("10.0.0.1", "6.6.6.6, unknown:80, 10.0.0.2:1234", None, "10.0.0.2"),
    ("10.0.0.1", "6.6.6.6, _hidden, [fd00::2]:80", None, "fd00::2"),
    ("10.0.0.1", "6.6.6.6, unknown", "3.3.3.3", "10.0.0.1"),  # nor is X-Real-IP asked then
    ("10.0.0.1", "6.6.6.6, 9.9.9.9\x00, 10.0.0.2", None, "10.0.0.2"),
    ("10.0.0.1", "6.6.6.6, 1.2.3.4:123456", None, "10.0.0.1"),
    ("10.0.0.1", "6.6.6.6, [2001:db8::1, 10.0.0.2", None, "10.0.0.2"),
    ("10.0.0.1", "6.6.6.6, 999.1.1.1", None, "10.0.0.1"),
    ("10.0.0.1", "6.6.6.6, 5.5.5.5, unknown", None, "10.0.0.1"),
    ("10.0.0.1", "unknown, 5.5.5.5", None, "5.5.5.5"),  # an untrusted hop ends the walk before it
]


@pytest.mark.parametrize(("peer", "forwarded_for", "real_ip", "expected"), RESOLVE_CASES)
def test_resolve_client_ip(peer: str, forwarded_for: str | None, real_ip: str | None, expected: str) -> None:
    assert resolve_client_ip(peer, forwarded_for, real_ip, TRUSTED) == ip(expected)


UNPARSEABLE_PEERS = [None, "", "garbage", "1.2.3", "[::1", "[]", "[]:80", "1.2.3.4:5:6x", "1.2.3.4:123456", "x" * 10000]


@pytest.mark.parametrize("peer", UNPARSEABLE_PEERS)
def test_unparseable_peer_gives_no_client_ip(peer: str | None) -> None:
    assert resolve_client_ip(peer, "1.1.1.1", "3.3.3.3", TRUSTED) is None


def test_mapped_result_is_an_ipv4_address() -> None:
    result = resolve_client_ip("::ffff:1.2.3.4", None, None, ())
    assert result == ip("1.2.3.4")
    assert str(result) == "1.2.3.4"


def test_no_trusted_proxies_means_the_peer_always_wins() -> None:
    assert resolve_client_ip("10.0.0.1", "1.1.1.1", "3.3.3.3", ()) == ip("10.0.0.1")


def test_forwarded_for_walk_is_capped_at_64_entries() -> None:
    # The untrusted client sits 65 hops from the right: beyond the cap, so X-Real-IP answers.
    chain = ", ".join(["1.1.1.1"] + ["10.0.0.2"] * 64)
    assert resolve_client_ip("10.0.0.1", chain, "3.3.3.3", TRUSTED) == ip("3.3.3.3")
    chain = ", ".join(["1.1.1.1"] + ["10.0.0.2"] * 63)
    assert resolve_client_ip("10.0.0.1", chain, "3.3.3.3", TRUSTED) == ip("1.1.1.1")


@pytest.mark.parametrize(
    "forwarded_for",
    [
        ", ".join(["10.0.0.2"] * 200_000),
        "," * 500_000,
        "[" * 300_000 + "]:" * 1000,
        "\x00\xff" * 100_000,
        "2001:" * 100_000,
    ],
    ids=["many-trusted", "only-commas", "brackets", "binary", "long-entry"],
)
def test_hostile_forwarded_for_is_cheap_and_harmless(forwarded_for: str) -> None:
    started = time.perf_counter()
    result = resolve_client_ip("10.0.0.1", forwarded_for, "x" * 100_000, TRUSTED)
    assert result == ip("10.0.0.1")
    assert time.perf_counter() - started < 0.5


PREFIX_CASES = [
    ("1.2.3.4", "1.2.3.0"),
    ("1.2.3.255", "1.2.3.0"),
    ("::ffff:1.2.3.4", "1.2.3.0"),
    ("2001:da8:d800:1234::1", "2001:da8:d800::"),
    ("2001:da8:d800:ffff:ffff:ffff:ffff:ffff", "2001:da8:d800::"),
    ("::1", "::"),
    ("fe80::1%eth0", "fe80::"),
]


@pytest.mark.parametrize(("address", "expected"), PREFIX_CASES)
def test_network_prefix_is_ipv4_slash_24_and_ipv6_slash_48(address: str, expected: str) -> None:
    assert network_prefix(ip(address)) == expected


def rule(cidr: str, mode: str) -> IPModeRule:
    network: IPNetwork = ipaddress.ip_network(cidr)
    return IPModeRule(network=network, mode="proxy" if mode == "proxy" else "302")


MATCHER = IPModeMatcher(
    IPModesConfig(
        default="302",
        rules=(
            rule("202.38.64.0/19", "proxy"),
            rule("202.38.64.0/24", "302"),  # overlaps the first: never reached
            rule("2001:da8::/32", "proxy"),
            rule("0.0.0.0/0", "302"),
        ),
    )
)

MODE_CASES = [
    ("202.38.70.1", "proxy"),
    ("202.38.64.1", "proxy"),  # first matching rule wins
    ("8.8.8.8", "302"),
    ("::ffff:202.38.70.1", "proxy"),
    ("2001:da8:d800::1", "proxy"),
    ("2001:db8::1", "302"),
]


@pytest.mark.parametrize(("address", "expected"), MODE_CASES)
def test_ip_mode_first_matching_rule_wins(address: str, expected: str) -> None:
    assert MATCHER.mode_for(ip(address)) == expected


@pytest.mark.parametrize("address", [None, "8.8.8.8", "2001:db8::1"])
def test_ip_mode_without_a_match_is_the_default(address: str | None) -> None:
    matcher = IPModeMatcher(IPModesConfig(default="proxy", rules=(rule("202.38.64.0/19", "302"),)))
    assert matcher.mode_for(None if address is None else ip(address)) == "proxy"


def test_ip_mode_with_no_rules_is_the_default() -> None:
    assert IPModeMatcher(IPModesConfig()).mode_for(ip("202.38.70.1")) == "302"
