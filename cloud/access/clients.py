"""Who is asking: the client's address behind trusted reverse proxies, and whether a request
came over plain http to a loopback address (the only place a cookie may go without Secure).

With `access.trusted_proxies` set, a middleware replaces each request's `remote` by the client
address the proxy forwarded and its scheme by the one it was asked in (`X-Forwarded-Proto`),
so login throttling and the audit log see clients, not the proxy. From any other peer those
headers are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDING = ("X-Forwarded-For", "Forwarded")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, trusted: tuple[Network, ...]) -> None:
    if not trusted:
        return

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _trusted(request.remote, trusted):
            return await handler(request)
        proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        scheme = proto if proto in ("http", "https") else request.scheme
        client = client_address(request, trusted) or request.remote or ""
        return await handler(request.clone(remote=client, scheme=scheme))

    app.middlewares.append(forwarded)


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: str | None, trusted: tuple[Network, ...]) -> bool:
    ip = _ip(address) if address else None
    return ip is not None and any(ip in net for net in trusted)


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str | None:
    """The address that sent `request`: the peer, or, when the peer is a trusted proxy, the
    rightmost address in `X-Forwarded-For` that is not itself a trusted proxy. Entries left of
    that one are whatever the client claimed and are never believed."""
    remote = request.remote
    if not _trusted(remote, trusted):
        return remote
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if _ip(hop) is None:
            return remote  # a mangled header: count the proxy, not a made-up client
        if not _trusted(hop, trusted):
            return hop
    return remote


def is_loopback_peer(request: web.Request) -> bool:
    """A client on this host talking to us directly: a loopback peer and no proxy header (a
    reverse proxy on the same host would otherwise make every client look local)."""
    ip = _ip(request.remote or "")
    return ip is not None and ip.is_loopback and not any(h in request.headers for h in FORWARDING)


def plain_http_on_loopback(request: web.Request) -> bool:
    """Whether the browser addressed us as http://localhost or http://127.x / [::1] (behind a
    trusted proxy, `forwarded` has set the scheme it was asked in)."""
    if request.secure:
        return False
    try:
        host = urlsplit(f"//{request.host}").hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback
