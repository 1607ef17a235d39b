"""SSRF guards for the file-download provider: which hosts may be named, which addresses reached.

Two independent checks. The host allow-list is applied to the URL (every redirect hop) before any
connection. The address rules are applied where the connection is made: a resolver wrapping
aiohttp's default one drops refused addresses from every DNS answer (so a name that is re-bound to
127.0.0.1 after a check cannot be reached), and the connector's socket factory refuses once more on
the exact address it is about to connect to (literal IPs never pass through a resolver).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ..logs import get_logger

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_net = ipaddress.ip_network

# Refused even with allow_private_networks: instance metadata services (AWS/GCP/Azure/Oracle
# 169.254.169.254, AWS IPv6 fd00:ec2::254, Alibaba 100.100.100.200, Azure wireserver).
METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)

# (network, reason, opened by allow_private_networks); first match wins, so order matters.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str, bool], ...] = tuple(
    (ipaddress.IPv4Network(n), reason, openable)
    for n, reason, openable in (
        ("0.0.0.0/8", "unspecified", False),
        ("127.0.0.0/8", "loopback", True),
        ("10.0.0.0/8", "private", True),
        ("172.16.0.0/12", "private", True),
        ("192.168.0.0/16", "private", True),
        ("100.64.0.0/10", "shared (CGNAT)", True),
        ("169.254.0.0/16", "link-local", False),
        ("224.0.0.0/4", "multicast", False),
        ("255.255.255.255/32", "broadcast", False),
        ("240.0.0.0/4", "reserved", False),
        ("192.0.0.0/24", "reserved", False),
        ("192.0.2.0/24", "reserved", False),
        ("192.88.99.0/24", "reserved", False),
        ("198.18.0.0/15", "reserved", False),
        ("198.51.100.0/24", "reserved", False),
        ("203.0.113.0/24", "reserved", False),
    )
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str, bool], ...] = tuple(
    (ipaddress.IPv6Network(n), reason, openable)
    for n, reason, openable in (
        ("::/128", "unspecified", False),
        ("::1/128", "loopback", True),
        ("fc00::/7", "private", True),
        ("fec0::/10", "private", True),  # deprecated site-local
        ("fe80::/10", "link-local", False),
        ("ff00::/8", "multicast", False),
        ("64:ff9b:1::/48", "reserved", False),  # local-use NAT64: the embedding is site-defined
        ("2001::/23", "reserved", False),  # IETF protocol assignments, Teredo included
        ("2001:db8::/32", "reserved", False),
        ("3fff::/20", "reserved", False),
    )
)
_GLOBAL_UNICAST = _net("2000::/3")
_NAT64 = _net("64:ff9b::/96")
_SIX_TO_FOUR = _net("2002::/16")


class ForbiddenTarget(Exception):
    """A download target the SSRF rules refuse; not an OSError, so aiohttp never wraps it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_ip(text: str) -> IPAddress | None:
    """A literal address (brackets and an IPv6 zone allowed), or None for a host name."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries (mapped, compatible, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why ``ip`` must not be connected to, or None when it may be."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))  # the zone says which link, not which address
    if ip in METADATA:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            inner = refusal(embedded[1], allow_private)
            return f"{embedded[0]} {inner}" if inner else None
        rules: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, bool]] = _V6_RULES
    else:
        rules = _V4_RULES
    for net, reason, openable in rules:
        if ip in net:
            return None if openable and allow_private else reason
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def canonical_host(host: str) -> str:
    """Lower-case, IDNA-encoded, without a trailing dot; IP literals in their compressed form."""
    host = host.strip().rstrip(".").lower()
    ip = parse_ip(host)
    if ip is not None:
        return str(ip)
    try:
        raw = URL.build(scheme="http", host=host).raw_host
    except ValueError:
        return host
    return (raw or host).rstrip(".")


class HostAllowList:
    """``allowed_hosts``: exact names, and ``*.example.com`` for subdomains of any depth only."""

    __slots__ = ("_exact", "_suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        suffixes: list[str] = []
        for pattern in patterns:
            if pattern.startswith("*."):
                suffixes.append("." + canonical_host(pattern[2:]))
            else:
                exact.add(canonical_host(pattern))
        self._exact = frozenset(exact)
        self._suffixes = tuple(suffixes)

    def allows(self, host: str) -> bool:
        name = canonical_host(host)
        if name in self._exact:
            return True
        return any(name.endswith(s) and len(name) > len(s) for s in self._suffixes)


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and keeps only the addresses the rules allow; none left is a refusal."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or aiohttp.DefaultResolver()
        self._log = get_logger("download")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            ip = parse_ip(answer["host"])
            reason = "unparsable" if ip is None else refusal(ip, self._allow_private)
            if reason is None:
                kept.append(answer)
            else:
                refused.append(f"{answer['host']} ({reason})")
        if refused:
            self._log.warning("download_addresses_refused", host=host, refused=refused,
                              kept=len(kept))
        if not kept:
            raise ForbiddenTarget(f"{host} resolves only to refused addresses: {', '.join(refused)}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(allow_private: bool) -> Callable[[AddrInfoType], socket.socket]:
    """The last check, on the exact address a socket is about to connect to."""

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        ip = parse_ip(address)
        reason = "unparsable" if ip is None else refusal(ip, allow_private)
        if reason is not None:
            raise ForbiddenTarget(f"address {address} is {reason}")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def guarded_connector(
    allow_private: bool, *, limit: int = 256, inner: AbstractResolver | None = None
) -> aiohttp.TCPConnector:
    """A pooled connector that can only reach addresses the rules allow."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private, inner),
        socket_factory=guarded_socket_factory(allow_private),
        limit=limit,
        ttl_dns_cache=60,  # the cache only ever holds answers that were already filtered
        keepalive_timeout=15,
    )
