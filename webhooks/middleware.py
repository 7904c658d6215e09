"""One plain ASGI middleware for what every request shares: request id, body cap, metrics, log.

It is one layer, not four, and plain ASGI (no ``BaseHTTPMiddleware``), because the pixel path
is the hottest in the product: a ``/t/...`` request only bumps a pre-bound counter and goes
through untouched (no id, no timing, no log line; those routes read no body).

For every other request:

- **Request id**: ``X-Request-ID`` from the client or proxy if it is a sane token (up to 128
  of ``A-Za-z0-9._-``), else a fresh one; echoed in the response and put in
  ``webhooks.logs.request_id_var`` so every log line the request causes carries it.
- **Body cap**: a ``Content-Length`` over ``DRIP_MAX_BODY_BYTES`` is refused at once; a body
  without one (chunked) is counted as it streams, and reading past the cap raises
  ``BodyTooLarge``, an ``HTTPException`` the problem handlers turn into 413 problem JSON (a
  page for a browser's form post, as ``problems.negotiated_problem`` decides). Routes may
  enforce lower limits themselves. A few paths get their own, larger cap (``path_limits``):
  the transactional API's, whose attachments (``DRIP_TX_ATTACHMENTS_MAX_BYTES``) arrive as
  base64 in the JSON body (``transactional_body_limit``).
- **NUL**: a query string, or an ``/api/`` or ``/dashboard/`` path, carrying a NUL is a 400
  problem before any route runs.
- **Metrics** by route template and status, and one ``drip.access`` log line (INFO) with
  method, path, route, status and duration.

``ClientAddressMiddleware`` is the one place that decides who the client is (see its docstring):
everything that uses the client's address (rate limits, consent, tracking hits) reads the
scope's ``client`` after it, through ``client_address`` or the scope itself.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webhooks.logs import request_id_var
from webhooks.metrics import ApiMetrics
from webhooks.problems import negotiated_problem

__all__ = [
    "BodyTooLarge",
    "ClientAddressMiddleware",
    "OperationsMiddleware",
    "TrustedProxies",
    "client_address",
]

access_log = logging.getLogger("drip.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")


class BodyTooLarge(HTTPException):
    """The request body passed the global cap while a route read it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


#: where a path segment is a value looked up in the database; a public page's path carries a
#: signed token, and a bad one (NUL included) gets that page's own "not valid" answer
_PATHS_WITH_VALUES = ("/api/", "/dashboard/")


def _has_nul(scope: Scope) -> bool:
    """A NUL in a query parameter or an API path is never meaningful to drip, and PostgreSQL
    cannot compare text with one (a 500 from every route that filters by it): refused here,
    once, rather than in each parameter's type."""
    path: str = scope["path"]
    return any(nul in scope["query_string"] for nul in (b"%00", b"\x00")) or (
        "\x00" in path and path.startswith(_PATHS_WITH_VALUES)
    )


#: the transactional API's paths, whose bodies carry attachments
TRANSACTIONAL_PATHS = ("/api/messages", "/api/messages/batch")


def transactional_body_limit(max_body_bytes: int, attachments_max_bytes: int) -> int:
    """The body cap of the transactional API: its attachments cap as base64 (4 characters for
    each 3 bytes), plus the general cap for the rest of the JSON (recipient, subject, data,
    filenames). Without it the general cap (1 MB) would refuse every attachment over about
    750 KB, long before ``DRIP_TX_ATTACHMENTS_MAX_BYTES`` (10 MB) is reached."""
    return max_body_bytes + 4 * -(-attachments_max_bytes // 3)


class OperationsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ApiMetrics,
        max_body_bytes: int,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        #: exact paths with a cap of their own instead of ``max_body_bytes``
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/t/"):
            if path.startswith("/t/o/"):
                self.metrics.tracking_open.inc()
            elif path.startswith("/t/c/"):
                self.metrics.tracking_click.inc()
            else:
                self.metrics.tracking_other.inc()
            await self.app(scope, receive, send)
            return
        await self._observed(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = declared_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SANE_ID.match(value):
                request_id = value.decode()
            elif name == b"content-length":
                declared_length = value
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        status = 500  # what the client gets if the app raises before answering
        response_started = False
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if declared_length is not None and _over(declared_length, limit):
                await negotiated_problem(
                    Request(scope), 413, f"request bodies are limited to {limit} bytes"
                )(scope, receive, send_with_id)
            elif _has_nul(scope):
                await negotiated_problem(
                    Request(scope), 400, "the request's path or query contains a NUL character"
                )(scope, receive, send_with_id)
            else:
                try:
                    await self.app(scope, capped_receive, send_with_id)
                except BodyTooLarge as exc:  # raised where no handler caught it
                    if response_started:
                        raise
                    await negotiated_problem(Request(scope), 413, str(exc.detail))(
                        scope, receive, send_with_id
                    )
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method: str = scope["method"]
            self.metrics.observe(method, template, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


def _over(declared: bytes, limit: int) -> bool:
    try:
        return int(declared) > limit
    except ValueError:  # a malformed length is the server's (h11/httptools) to refuse
        return False


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request) -> str | None:
    """The client's address as ``ClientAddressMiddleware`` decided it (None: not known, e.g.
    a Unix socket)."""
    return request.client.host if request.client else None


class TrustedProxies:
    """Who the client of a request is, given its peer and the headers the peer sent.

    Forwarding headers are anyone's to write, so they are read only when the peer is a proxy
    we were told to trust (``DRIP_TRUSTED_PROXIES``), and only the header those proxies write
    (``DRIP_PROXY_HEADER``). Each proxy appends the address it was connected from, so the list
    is walked from the right: past every trusted proxy, the first address that is not one is
    the client. Whatever the client itself wrote sits further left and is never reached.
    """

    def __init__(
        self,
        networks: Sequence[Network],
        header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ) -> None:
        self.networks = tuple(networks)
        self.header = header.encode()

    def trusts(self, address: str) -> bool:
        return _in_networks(address, self.networks)

    def resolve(
        self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[str | None, str | None]:
        """(client address, scheme): the peer and None unless the peer is a trusted proxy
        that says otherwise."""
        if peer is None or not self.trusts(peer):
            return peer, None
        values: list[str] = []
        protos: list[str] = []
        for name, value in headers:
            if name == self.header:
                values.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                protos.append(value.decode("latin-1"))
        # commas never occur in an address (or a proto), so a plain split keeps the right end,
        # the proxies' part, intact whatever a client put on the left
        hops: list[tuple[str, str | None]] = []
        if self.header == b"forwarded":
            for element in ",".join(values).split(","):
                pairs = dict(_pair(p) for p in element.split(";") if "=" in p)
                if pairs:
                    hops.append((pairs.get("for", "unknown"), pairs.get("proto")))
        else:
            hops = [(hop, None) for hop in ",".join(values).split(",") if hop.strip()]
        client, index = peer, None
        for index in range(len(hops) - 1, -1, -1):
            client = _canonical(hops[index][0])
            if not self.trusts(client):
                break
        return client, self._scheme(hops, index, ",".join(protos).split(",") if protos else [])

    def _scheme(
        self, hops: list[tuple[str, str | None]], index: int | None, protos: list[str]
    ) -> str | None:
        """The scheme the client used: the ``proto`` of its hop in ``Forwarded``; in
        ``X-Forwarded-Proto`` the value beside its address when every proxy appended one,
        else the last (what the trusted peer itself says)."""
        if self.header == b"forwarded":
            proto = hops[index][1] if index is not None else None
        elif index is not None and len(protos) == len(hops):
            proto = protos[index]
        else:
            proto = protos[-1] if protos else None
        proto = (proto or "").strip().strip('"').lower()
        return proto if proto in ("http", "https") else None


class ClientAddressMiddleware:
    """Rewrites the scope's ``client`` (and ``scheme``) to the client's, as ``TrustedProxies``
    decides, ahead of every other layer, whatever server runs the app.

    Servers have rules of their own (uvicorn believes ``X-Forwarded-For`` from any loopback
    peer by default); ``drip api`` and ``drip dev`` switch them off, so this is the only one.
    The app adds it only when proxies are trusted: otherwise the peer is the client as the
    server reports it, and the pixel path has one layer less.
    """

    def __init__(self, app: ASGIApp, *, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            client, scheme = self.proxies.resolve(peer[0] if peer else None, scope["headers"])
            if client is not None and (peer is None or client != peer[0]):
                scope["client"] = (client, 0)
            if scheme is not None:
                scope["scheme"] = scheme
        await self.app(scope, receive, send)


def _pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name.strip().lower(), value.strip()


def _canonical(hop: str) -> str:
    """An address in one spelling (``[v6]:port`` and ``v4:port`` lose the port, IPv4-mapped
    IPv6 becomes IPv4); a token that is no address (``unknown``, an obfuscated ``_id``) as is,
    so it counts as an untrusted client of its own."""
    token = hop.strip().strip('"')
    if token.startswith("["):
        token = token[1:].partition("]")[0]
    elif token.count(":") == 1:
        token = token.partition(":")[0]
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        return token[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=4096)
def _in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)
