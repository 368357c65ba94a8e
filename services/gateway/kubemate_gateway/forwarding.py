"""What the gateway believes about a request it forwards: the client's address and a path that
cannot climb out of ``/v1``. No FastAPI here."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import unquote

from kubemate.errors import NotFound

Network = IPv4Network | IPv6Network


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[Network]
) -> str:
    """The address the rate limits count against.

    The TCP peer, unless the peer is a trusted proxy: then the rightmost X-Forwarded-For entry
    that is not itself a trusted proxy (proxies append the address they saw, so entries to its
    left were written by the client and prove nothing)."""
    peer_ip = _parse(peer or "")
    if peer_ip is None:
        return peer or "unknown"

    def trusted(ip: IPv4Address | IPv6Address) -> bool:
        return any(ip in net for net in trusted_proxies)

    if not forwarded_for or not trusted(peer_ip):
        return str(peer_ip)
    hops = [_parse(part) for part in forwarded_for.split(",")]
    for hop in reversed(hops):
        if hop is None:
            break  # garbage from here on is the client's own writing
        if not trusted(hop):
            return str(hop)
    return str(peer_ip)


def upstream_path(raw_path: bytes) -> str:
    """The still percent-encoded ``/v1/...`` path to forward, or :class:`NotFound` for one with
    dot segments (also encoded ones such as ``%2e%2e``) or control characters, which could
    otherwise reach paths outside ``/v1`` of a service once normalised."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise NotFound("no such path") from None
    for segment in path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise NotFound("no such path")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
            raise NotFound("no such path")
    if not path.startswith("/v1/"):
        raise NotFound("no such path")
    return path
