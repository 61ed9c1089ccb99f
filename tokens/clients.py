"""Who is asking: the client address behind trusted proxies, and the key that the rate
limit and the per-client call cap count it under."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# One IPv6 subscriber usually holds a whole /64 (SLAAC, privacy addresses): counting single
# addresses would give one person 2^64 budgets.
IPV6_CLIENT_PREFIX = 64


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443" (RFC 7239 style)
        text = text[1:text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IPNetwork]) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[IPNetwork]) -> str:
    """The client's address: the peer, or (when the peer is a trusted proxy) the nearest
    X-Forwarded-For hop that is not itself a trusted proxy.

    Entries are read right to left because only the right end was written by proxies we
    trust; anything further left came from the client and may be invented. An entry that
    is not an address stops the walk at the last hop we could vouch for.
    """
    peer = peer or "unknown"
    addr = _ip(peer)
    if addr is None or not forwarded_for or not _trusted(addr, proxies):
        return peer
    current = peer
    for hop in reversed(forwarded_for.split(",")):
        hop_addr = _ip(hop)
        if hop_addr is None:
            return current
        current = str(hop_addr)
        if not _trusted(hop_addr, proxies):
            return current
    return current


def client_key(address: str) -> str:
    """What limits count a client under: an IPv4 address, or an IPv6 /64."""
    addr = _ip(address)
    if addr is None:
        return address
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, IPV6_CLIENT_PREFIX), strict=False))
    return str(addr)
