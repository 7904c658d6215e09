"""Outbound HTTP: drip's one way to POST JSON to the outside world.

The campaign ``webhook`` step and the sales chat alert both POST to URLs that a marketer typed, so
this module is where the server must not become a proxy into our own network (SSRF: the cloud
metadata endpoint at 169.254.169.254, an admin port on localhost, a database in 10.0.0.0/8).
Every call therefore:

1. accepts only ``https://`` (unless the policy allows http), no userinfo, and a host on the
   policy's allowlist (exact names, or ``*.example.com`` for any subdomain of example.com);
2. resolves the host once and checks *every* address: each must be publicly routable, or inside
   one of the policy's ``allowed_networks``. One bad address refuses the whole host, because a
   public name that also resolves into our network is a rebinding attempt or a misconfiguration,
   and both deserve an operator's attention rather than a silent pick of the good address;
3. connects only to an address it checked ("pinning"): the request goes to the IP, carrying the
   original ``Host`` header, and the original name is used for TLS SNI *and* certificate
   verification (httpcore's ``sni_hostname`` request extension feeds ``server_hostname``), so a
   DNS answer that changes between the check and the connect (DNS rebinding) cannot move it;
4. never follows a redirect, since a 3xx may point anywhere.

Each call opens its own client: pinned connections are keyed by IP in a pool, so a shared pool
could reuse a TLS connection verified for one name to send a request meant for another name on
the same IP. Proxies from the environment are ignored for the same reason (``trust_env=False``).

Failures are classified for Temporal, which retries an activity until it returns or raises a
non-retryable error:

- ``OutboundRefused``: the URL is not allowed. Permanent: the calling activity should raise it as a
  non-retryable ``ApplicationError`` (or list ``OutboundRefused`` in the retry policy's
  ``non_retryable_error_types``). This module imports nothing from Temporal.
- ``OutboundRetryable``: timeout, DNS, connection or TLS failure, 408, 425, 429 and 5xx. Let
  Temporal retry with backoff; ``Retry-After`` is deliberately not interpreted.
- ``Delivery``: any other answer. 2xx is ``ok``; 3xx and other 4xx are permanent verdicts about
  the request, recorded and not retried.

Receivers can trust and dedupe what we send:

- ``Drip-Signature: t=<unix seconds>,v1=<hex>`` where the hex is
  HMAC-SHA256(secret, ``f"{t}.{raw body}"``) (Stripe's scheme). A receiver recomputes it over the
  raw body bytes and refuses a ``t`` more than a few minutes from its clock, so a captured request
  cannot be replayed later; ``verify_signature`` does exactly that.
- ``Idempotency-Key`` is the same across retries of one step, so a receiver can drop the duplicate
  that a retry after a lost response creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from campaigns.hosts import host_allowed, normalise_host
from drip.settings import __version__

__all__ = [
    "IDEMPOTENCY_HEADER",
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_HEADER",
    "Delivery",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundRetryable",
    "new_client",
    "post_json",
    "post_signed_body",
    "verify_signature",
]

SIGNATURE_HEADER = "Drip-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Most of a response we ever read: only a snippet of it is kept, for the operator.
MAX_RESPONSE_BYTES = 64 * 1024
_SNIPPET_CHARS = 300
#: Statuses that say "not now" rather than "not this request".
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")
#: NAT64 well-known prefix (RFC 6052): the last 32 bits are the IPv4 address actually reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Delivery:
    """What the receiver answered, when the answer is final (success or a permanent refusal)."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx: the receiver accepted the payload."""
        return self.status is not None and 200 <= self.status < 300


class OutboundRefused(Exception):
    """The URL is not allowed (host not allowlisted, private address, not https...). Permanent."""


class OutboundRetryable(Exception):
    """Timeout, connection error, 408, 425, 429, 5xx: try again later (Temporal retries it)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OutboundPolicy:
    """Where drip may POST, checked on every call. Invalid entries fail here, at configuration.

    ``allowed_hosts`` holds exact host names (ASCII/punycode, case-insensitive) or IP literals, or
    ``*.example.com`` for every subdomain of example.com at any depth (not example.com itself).
    Empty allows nothing. ``allowed_networks`` are CIDRs an allowlisted host may resolve into even
    though they are private, loopback or link-local (``127.0.0.1/32`` in tests, ``10.0.0.0/8``
    for an internal CRM). ``timeout`` bounds the whole call, DNS included. ``verify=False`` turns
    off certificate checks and is for local development only.
    """

    allowed_hosts: frozenset[str]
    allowed_networks: tuple[str, ...] = ()
    timeout: float = 10.0
    verify: ssl.SSLContext | bool = True
    allow_http: bool = False

    def __post_init__(self) -> None:
        for entry in self.allowed_hosts:
            name = normalise_host(entry.removeprefix("*."))
            port_given = ":" in name and not _is_ip(name)
            if not name or port_given or any(c in name for c in "*/@ \t?#"):
                raise ValueError(
                    f"allowed_hosts entry {entry!r} is not a host name, an IP address or '*.domain'"
                )
        for cidr in self.allowed_networks:
            ipaddress.ip_network(cidr)  # ValueError names the bad entry, e.g. host bits set
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")

    def networks(self) -> tuple[IPNetwork, ...]:
        """``allowed_networks`` parsed."""
        return tuple(ipaddress.ip_network(cidr) for cidr in self.allowed_networks)

    def allows_host(self, host: str) -> bool:
        """Whether the host matches an exact entry or a ``*.`` wildcard, ignoring case and a
        trailing dot (the port is not part of the match)."""
        return host_allowed(host, self.allowed_hosts)


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # normalised: lower case, no trailing dot, IPv6 without brackets
    port: int
    literal: bool  # the host is an IP address, so there is no name to resolve or verify


async def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    policy: OutboundPolicy,
    idempotency_key: str,
    secret: bytes,
    now: datetime | None = None,
) -> Delivery:
    """POST ``payload`` as signed JSON to ``url``, if the policy allows it; see the module doc.

    Returns a Delivery for a final answer (2xx ok, 3xx and other 4xx permanent), raises
    OutboundRefused for a URL the policy refuses, OutboundRetryable for anything worth retrying.
    A payload that is not JSON-serialisable raises TypeError/ValueError before any I/O: that is
    a bug in the caller, which no retry fixes.
    """
    body = _encode(payload)
    if not _HEADER_VALUE.fullmatch(idempotency_key):
        raise ValueError("idempotency_key must be non-empty printable ASCII without spaces")
    if not secret:
        raise ValueError("secret must not be empty: receivers could not verify the signature")
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    target = _target(url, policy)
    headers = {
        "Host": target.url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": f"drip/{__version__}",
        "Accept-Encoding": "identity",  # the error snippet is read raw, never decompressed
        IDEMPOTENCY_HEADER: idempotency_key,
        SIGNATURE_HEADER: _signature(secret, body, int(moment.timestamp())),
    }
    try:
        async with asyncio.timeout(policy.timeout):
            addresses = await _checked_addresses(target, policy)
            return await _send(target, addresses, body, headers, policy)
    except TimeoutError as exc:
        raise OutboundRetryable(
            f"POST to {target.host} timed out after {policy.timeout:g}s"
        ) from exc


async def post_signed_body(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    policy: OutboundPolicy,
    client: httpx.AsyncClient | None = None,
) -> Delivery:
    """POST ``body`` with the caller's signature ``headers`` to ``url``, if the policy allows
    it, with the same checks, pinning and outcomes as ``post_json``: for senders that sign by
    another scheme (outgoing event webhooks sign the Standard Webhooks way). ``client``
    (``new_client``, for this URL's host only) keeps connections for the caller's next POSTs;
    the addresses are checked on every call all the same."""
    target = _target(url, policy)
    sent = {
        "Host": target.url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": f"drip/{__version__}",
        "Accept-Encoding": "identity",
        **headers,
    }
    try:
        async with asyncio.timeout(policy.timeout):
            addresses = await _checked_addresses(target, policy)
            return await _send(target, addresses, body, sent, policy, client)
    except TimeoutError as exc:
        raise OutboundRetryable(
            f"POST to {target.host} timed out after {policy.timeout:g}s"
        ) from exc


def verify_signature(
    secret: bytes, header: str, body: bytes | str, *, now: datetime, tolerance: float = 300
) -> bool:
    """Check a ``Drip-Signature`` header as a receiver should: right HMAC, recent timestamp.

    A timestamp more than ``tolerance`` seconds from ``now`` (either way) fails, which is what
    makes a captured request useless for a replay. Several ``v1=`` entries are accepted so a
    sender can sign with an old and a new secret while the secret rotates.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and timestamp is None and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = _signature(secret, raw, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def _encode(payload: Mapping[str, Any]) -> bytes:
    # Compact and sorted, so the same payload is the same bytes (and signature input) every time.
    text = json.dumps(
        dict(payload), separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    )
    return text.encode()


def _signature(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _target(url: str, policy: OutboundPolicy) -> _Target:
    """The parsed URL, if its scheme, userinfo and host pass the policy."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OutboundRefused(f"not a valid URL: {url!r} ({exc})") from exc
    if parsed.scheme != "https" and not (parsed.scheme == "http" and policy.allow_http):
        allowed = "https:// or http://" if policy.allow_http else "only https://"
        raise OutboundRefused(f"{parsed.scheme or 'no'} scheme refused in {url!r}: {allowed}")
    if parsed.userinfo:
        raise OutboundRefused("URLs with credentials (user:password@) are refused")
    host = normalise_host(parsed.raw_host.decode("ascii"))
    if not host:
        raise OutboundRefused(f"no host in URL {url!r}")
    if not policy.allows_host(host):
        raise OutboundRefused(f"host {host!r} is not in allowed_hosts")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _Target(url=parsed, host=host, port=port, literal=_is_ip(host))


async def _checked_addresses(target: _Target, policy: OutboundPolicy) -> list[IPAddress]:
    """Every address the host resolves to, in resolver order, if all of them are allowed."""
    if target.literal:
        addresses: list[IPAddress] = [ipaddress.ip_address(target.host)]
    else:
        addresses = await _resolve(target)
    networks = policy.networks()
    for address in addresses:
        why = _refusal(address, networks)
        if why is not None:
            where = "host" if target.literal else f"{target.host} resolves to"
            raise OutboundRefused(
                f"refused: {where} {_show(address)} ({why}), which is not in allowed_networks"
            )
    return addresses


async def _resolve(target: _Target) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except OSError as exc:  # socket.gaierror: NXDOMAIN or a resolver outage look alike here
        raise OutboundRetryable(f"cannot resolve {target.host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # An IPv6 link-local answer carries a zone ("fe80::1%eth0"); the zone does not matter here.
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundRetryable(f"{target.host} resolved to no address")
    return addresses


def _refusal(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why ``address`` may not be contacted, or None if it may."""
    if any(address in network for network in allowed):  # a v4 address is never in a v6 network
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # Forms that end at an IPv4 address are judged by it: ::ffff:127.0.0.1 is loopback and
        # 64:ff9b::a00:1 (NAT64) is 10.0.0.1; 2002:7f00:1:: (6to4) tunnels to 127.0.0.1.
        if address.ipv4_mapped is not None:
            why = _refusal(address.ipv4_mapped, allowed)
            return None if why is None else f"IPv4-mapped {why}"
        if address in _NAT64:
            why = _refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), allowed)
            return None if why is None else f"NAT64 {why}"
        if address.sixtofour is not None:
            why = _refusal(address.sixtofour, allowed)
            if why is not None:
                return f"6to4 {why}"
    if address == _METADATA_ADDRESS:
        return "link-local, the cloud metadata endpoint"
    flags = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (not address.is_global, "non-global"),
    )
    return next((why for flagged, why in flags if flagged), None)


def _show(address: IPAddress) -> str:
    """The address as an operator would write it: ``::ffff:127.0.0.1``, not ``::ffff:7f00:1``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    # httpx builds one per client (certifi, or SSL_CERT_FILE/SSL_CERT_DIR): seconds per thousand
    # calls. One context is safe to share; each call still gets its own connections.
    return httpx.create_ssl_context()


def new_client(policy: OutboundPolicy) -> httpx.AsyncClient:
    """A client as every call here makes one: ``post_signed_body`` takes one to reuse its
    connections for several POSTs to one host (the caller closes it). Only for one host name:
    a connection is made with that name's SNI and certificate, so another name must not reuse
    it even where both resolve to one address."""
    verify = _default_tls() if policy.verify is True else policy.verify
    return httpx.AsyncClient(
        verify=verify, timeout=policy.timeout, trust_env=False, follow_redirects=False
    )


async def _send(
    target: _Target,
    addresses: list[IPAddress],
    body: bytes,
    headers: dict[str, str],
    policy: OutboundPolicy,
    client: httpx.AsyncClient | None = None,
) -> Delivery:
    # For a name, SNI and certificate verification use the name although we connect to an IP.
    extensions = {} if target.literal else {"sni_hostname": target.host}
    failures: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(new_client(policy))
        for address in addresses:
            request = client.build_request(
                "POST",
                target.url.copy_with(host=str(address)),
                content=body,
                headers=headers,
                extensions=extensions,
            )
            try:
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: the next address is safe to try within the same deadline.
                failures.append(f"{address}: {exc or type(exc).__name__}")
                continue
            except httpx.TimeoutException as exc:
                raise OutboundRetryable(
                    f"POST to {target.host} timed out after {policy.timeout:g}s ({address})"
                ) from exc
            except httpx.TransportError as exc:
                raise OutboundRetryable(
                    f"POST to {target.host} ({address}) failed: {exc or type(exc).__name__}"
                ) from exc
            try:
                return await _verdict(response, target.host)
            finally:
                await response.aclose()
    raise OutboundRetryable(f"cannot connect to {target.host}: {'; '.join(failures)}")


async def _verdict(response: httpx.Response, host: str) -> Delivery:
    status = response.status_code
    if 200 <= status < 300:
        return Delivery(status)
    if 300 <= status < 400:
        location = _clean(response.headers.get("location", ""))
        return Delivery(status, error=f"redirect refused ({status} to {location or '?'})")
    snippet = await _snippet(response)
    answer = f"{host} answered {status} {_clean(response.reason_phrase)}".rstrip()
    detail = f"{answer}: {snippet}" if snippet else answer
    if status in _RETRYABLE_STATUSES or 500 <= status <= 599:
        raise OutboundRetryable(detail, status=status)
    return Delivery(status, error=detail)


async def _snippet(response: httpx.Response) -> str:
    """The start of the body, reading at most MAX_RESPONSE_BYTES of it, whatever it claims."""
    received = bytearray()
    try:
        async for chunk in response.aiter_raw():
            received += chunk
            if len(received) >= MAX_RESPONSE_BYTES:
                break
    except httpx.TransportError:
        pass  # the status is the verdict; the body is only a hint for the operator
    return _clean(bytes(received[:MAX_RESPONSE_BYTES]).decode("utf-8", errors="replace"))


def _clean(text: str) -> str:
    # Server-controlled text goes into logs and the UI: one line, printable, bounded.
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= _SNIPPET_CHARS else flat[: _SNIPPET_CHARS - 1] + "…"
