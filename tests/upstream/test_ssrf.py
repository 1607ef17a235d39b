"""SSRF rules as units: the address classifier, the host allow-list, the resolver and socket guard."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from sidecar.upstream.ssrf import (
    ForbiddenTarget,
    GuardedResolver,
    HostAllowList,
    canonical_host,
    guarded_connector,
    guarded_socket_factory,
    parse_ip,
    refusal,
)
from tests.support.resolvers import StaticResolver

# address, reason with allow_private_networks false, reason with it true
ADDRESSES = [
    ("127.0.0.1", "loopback", None),
    ("127.255.0.9", "loopback", None),
    ("10.1.2.3", "private", None),
    ("172.16.0.1", "private", None),
    ("172.31.255.255", "private", None),
    ("192.168.1.1", "private", None),
    ("100.64.0.1", "shared (CGNAT)", None),
    ("169.254.169.254", "cloud metadata", "cloud metadata"),
    ("169.254.1.1", "link-local", "link-local"),
    ("100.100.100.200", "cloud metadata", "cloud metadata"),
    ("0.0.0.0", "unspecified", "unspecified"),
    ("224.0.0.1", "multicast", "multicast"),
    ("239.255.255.250", "multicast", "multicast"),
    ("255.255.255.255", "broadcast", "broadcast"),
    ("240.0.0.1", "reserved", "reserved"),
    ("192.0.2.10", "reserved", "reserved"),
    ("::1", "loopback", None),
    ("::", "unspecified", "unspecified"),
    ("fc00::1", "private", None),
    ("fd12:3456::1", "private", None),
    ("fd00:ec2::254", "cloud metadata", "cloud metadata"),
    ("fe80::1", "link-local", "link-local"),
    ("fe80::1%eth0", "link-local", "link-local"),
    ("ff02::1", "multicast", "multicast"),
    ("2001:db8::1", "reserved", "reserved"),
    ("100::1", "reserved", "reserved"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback", None),
    ("::ffff:a9fe:a9fe", "IPv4-mapped cloud metadata", "IPv4-mapped cloud metadata"),
    ("::ffff:10.0.0.1", "IPv4-mapped private", None),
    ("::127.0.0.1", "IPv4-compatible loopback", None),
    ("64:ff9b::a9fe:a9fe", "NAT64 cloud metadata", "NAT64 cloud metadata"),
    ("64:ff9b::7f00:1", "NAT64 loopback", None),
    ("2002:7f00:1::1", "6to4 loopback", None),
    ("2002:a9fe:a9fe::", "6to4 cloud metadata", "6to4 cloud metadata"),
    ("8.8.8.8", None, None),
    ("93.184.216.34", None, None),
    ("2606:4700:4700::1111", None, None),
    ("::ffff:8.8.8.8", None, None),
    ("64:ff9b::808:808", None, None),  # DNS64 answer for a public IPv4-only host
]


@pytest.mark.parametrize(("address", "closed", "opened"), ADDRESSES)
def test_address_classification(address: str, closed: str | None, opened: str | None) -> None:
    """Each address is refused for the listed reason, and allow_private_networks opens only some."""
    ip = parse_ip(address)
    assert ip is not None
    assert refusal(ip, allow_private=False) == closed
    assert refusal(ip, allow_private=True) == opened


@pytest.mark.parametrize(
    ("patterns", "host", "allowed"),
    [
        (["*.example.com"], "cdn.example.com", True),
        (["*.example.com"], "a.b.example.com", True),
        (["*.example.com"], "CDN.Example.COM.", True),
        (["*.example.com"], "example.com", False),
        (["*.example.com"], "badexample.com", False),
        (["*.example.com"], "example.com.evil.org", False),
        (["example.com"], "example.com", True),
        (["example.com"], "EXAMPLE.com", True),
        (["example.com"], "cdn.example.com", False),
        (["example.com", "*.example.com"], "example.com", True),
        (["*.bücher.de"], "shop.xn--bcher-kva.de", True),
        (["*.xn--bcher-kva.de"], "shop.bücher.de", True),
        (["bücher.de"], "BÜCHER.de", True),
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.2", False),
        (["::1"], "[::1]", True),
        (["::ffff:127.0.0.1"], "::ffff:7f00:1", True),
        ([], "example.com", False),
    ],
)
def test_allowed_hosts(patterns: list[str], host: str, allowed: bool) -> None:
    """Wildcards match subdomains only, exact names only themselves, case- and IDNA-insensitively."""
    assert HostAllowList(patterns).allows(host) is allowed


def test_canonical_host_forms() -> None:
    """Host names become lower-case IDNA without a trailing dot; IPv6 literals lose brackets."""
    assert canonical_host("Bücher.Example.") == "xn--bcher-kva.example"
    assert canonical_host("[::1]") == "::1"


async def test_resolver_keeps_only_allowed_addresses() -> None:
    """A mixed DNS answer loses its private and metadata addresses; the public one remains."""
    inner = StaticResolver({"cdn.test": ["169.254.169.254", "10.0.0.7", "93.184.216.34"]})
    answers = await GuardedResolver(False, inner).resolve("cdn.test", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34"]


async def test_resolver_refuses_when_nothing_is_left() -> None:
    """A name that resolves only to refused addresses raises ForbiddenTarget naming them."""
    inner = StaticResolver({"rebind.test": ["127.0.0.1", "::1"]})
    with pytest.raises(ForbiddenTarget) as info:
        await GuardedResolver(False, inner).resolve("rebind.test", 80)
    assert "127.0.0.1 (loopback)" in info.value.reason and "::1 (loopback)" in info.value.reason


async def test_resolver_metadata_stays_refused_with_private_networks() -> None:
    """allow_private_networks opens 10/8 but never the metadata address."""
    inner = StaticResolver({"m.test": ["169.254.169.254"], "p.test": ["10.0.0.7"]})
    resolver = GuardedResolver(True, inner)
    assert [a["host"] for a in await resolver.resolve("p.test")] == ["10.0.0.7"]
    with pytest.raises(ForbiddenTarget, match="cloud metadata"):
        await resolver.resolve("m.test")
    await resolver.close()
    assert inner.closed


async def test_real_resolver_refuses_localhost() -> None:
    """Through aiohttp's default resolver, ``localhost`` is refused unless private networks are open."""
    with pytest.raises(ForbiddenTarget, match="loopback"):
        await GuardedResolver(False).resolve("localhost", 80)
    assert await GuardedResolver(True).resolve("localhost", 80)


@pytest.mark.parametrize("address", ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254"])
def test_socket_factory_refuses_the_connect_address(address: str) -> None:
    """The socket factory refuses before a socket exists for a forbidden address."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    factory = guarded_socket_factory(False)
    with pytest.raises(ForbiddenTarget):
        factory((family, socket.SOCK_STREAM, 6, "", (address, 80)))


def test_socket_factory_allows_public_address() -> None:
    """A public address gets an ordinary socket of the requested family."""
    sock = guarded_socket_factory(False)((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 443)))
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://[::1]:9/", "http://localhost:9/"])
async def test_connector_refuses_without_any_url_check(url: str) -> None:
    """A session on the guarded connector raises ForbiddenTarget itself, before any connection."""
    async with aiohttp.ClientSession(connector=guarded_connector(False)) as session:
        with pytest.raises(ForbiddenTarget):
            await session.get(url)
