"""workflows.outbound against a real HTTPS server on 127.0.0.1 (trustme CA), no mocks.

The server records what arrived (headers, raw body, TLS SNI), so the tests can check the wire:
the signature verifies over the bytes received, and a pinned connection to 127.0.0.1 still
presents and verifies the name from the URL.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from drip import __version__
from tests.receiver import Server, start_server
from workflows.outbound import (
    Delivery,
    OutboundPolicy,
    OutboundRefused,
    OutboundRetryable,
    post_json,
    verify_signature,
)

SECRET = b"webhook-secret-for-tests"
KEY = "journey/welcome/1/1/step-3"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
# Both loopbacks, so "localhost" passes wherever it also resolves to ::1.
LOOPBACK = ("127.0.0.1/32", "::1/128")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def trust(ca: trustme.CA) -> ssl.SSLContext:
    """What a client needs to trust the test CA, as production trusts the public CAs."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def server(ca: trustme.CA) -> AsyncIterator[Server]:
    running = await start_server(ca, "localhost", "127.0.0.1")
    yield running
    await running.stop()


def policy(trust: ssl.SSLContext, **overrides: Any) -> OutboundPolicy:
    settings: dict[str, Any] = {
        "allowed_hosts": frozenset({"localhost"}),
        "allowed_networks": LOOPBACK,
        "verify": trust,
        "timeout": 5.0,
    }
    settings.update(overrides)
    return OutboundPolicy(**settings)


async def post(url: str, outbound: OutboundPolicy, payload: dict[str, Any] | None = None) -> Any:
    return await post_json(
        url,
        payload if payload is not None else {"event": "signup"},
        policy=outbound,
        idempotency_key=KEY,
        secret=SECRET,
        now=NOW,
    )


# --- delivered -----------------------------------------------------------------------------


async def test_success_is_signed_keyed_and_pinned_to_the_checked_address(
    server: Server, trust: ssl.SSLContext
) -> None:
    payload = {"name": "Zoë", "contact_id": 7, "tags": ["a", "b"]}
    delivery = await post(server.url("/ok"), policy(trust), payload)

    assert delivery == Delivery(200)
    assert delivery.ok
    [request] = server.received
    assert request.method == "POST"
    assert request.path == "/ok"
    # Compact, sorted JSON: the same payload is the same bytes on every retry.
    assert request.body == '{"contact_id":7,"name":"Zoë","tags":["a","b"]}'.encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"drip/{__version__}"
    assert request.headers["idempotency-key"] == KEY
    # Connected to the checked IP, yet the name is what the server saw, in Host and in TLS SNI
    # (and what the certificate was verified against: see the mismatch test below).
    assert request.headers["host"] == f"localhost:{server.port}"
    assert server.sni == ["localhost"]

    signature = request.headers["drip-signature"]
    assert signature.startswith(f"t={int(NOW.timestamp())},v1=")
    assert verify_signature(SECRET, signature, request.body, now=NOW + timedelta(seconds=30))


async def test_signature_refuses_replays_tampering_and_wrong_secrets(
    server: Server, trust: ssl.SSLContext
) -> None:
    await post(server.url("/ok"), policy(trust))
    [request] = server.received
    header, body = request.headers["drip-signature"], request.body

    assert verify_signature(SECRET, header, body.decode(), now=NOW)
    assert not verify_signature(SECRET, header, body, now=NOW + timedelta(seconds=301))
    assert not verify_signature(SECRET, header, body, now=NOW - timedelta(seconds=301))
    assert not verify_signature(SECRET, header, body.replace(b"signup", b"signuq"), now=NOW)
    assert not verify_signature(b"another secret", header, body, now=NOW)
    assert not verify_signature(SECRET, "v1=" + header.rpartition("v1=")[2], body, now=NOW)
    assert not verify_signature(SECRET, "garbage", body, now=NOW)
    # A receiver rotating secrets accepts a header signed by either.
    rotated = f"{header},v1={'0' * 64}"
    assert verify_signature(SECRET, rotated, body, now=NOW)


async def test_an_ip_literal_inside_allowed_networks_is_delivered(
    server: Server, trust: ssl.SSLContext
) -> None:
    outbound = policy(trust, allowed_hosts=frozenset({"127.0.0.1"}))
    delivery = await post(server.url("/ok", host="127.0.0.1"), outbound)

    assert delivery.ok
    assert server.received[0].headers["host"] == f"127.0.0.1:{server.port}"
    assert server.sni == [None]  # no SNI for an IP address (RFC 6066); the cert's IP SAN matched


async def test_plain_http_only_when_the_policy_allows_it(trust: ssl.SSLContext) -> None:
    plain = await Server(None).start()
    try:
        with pytest.raises(OutboundRefused, match="http scheme refused"):
            await post(plain.url("/ok"), policy(trust))
        assert plain.received == []

        assert (await post(plain.url("/ok"), policy(trust, allow_http=True))).ok
        assert plain.received[0].headers["idempotency-key"] == KEY
    finally:
        await plain.stop()


# --- answered, not delivered ---------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503])
async def test_busy_or_broken_receivers_are_retried(
    server: Server, trust: ssl.SSLContext, status: int
) -> None:
    with pytest.raises(OutboundRetryable, match=f"answered {status}") as raised:
        await post(server.url(f"/status/{status}"), policy(trust))

    assert raised.value.status == status
    assert f"nope {status} line two" in str(raised.value)


async def test_a_4xx_is_a_recorded_permanent_answer(server: Server, trust: ssl.SSLContext) -> None:
    delivery = await post(server.url("/status/404"), policy(trust))

    assert delivery.status == 404
    assert not delivery.ok
    assert delivery.error == "localhost answered 404 Not Found: nope 404 line two"


async def test_a_huge_error_body_leaves_a_short_snippet(
    server: Server, trust: ssl.SSLContext
) -> None:
    delivery = await post(server.url("/big"), policy(trust))

    assert delivery.status == 404
    assert delivery.error is not None
    assert delivery.error.startswith("localhost answered 404 Not Found: xxx")
    assert len(delivery.error) < 400


async def test_redirects_are_never_followed(server: Server, trust: ssl.SSLContext) -> None:
    delivery = await post(server.url("/status/302"), policy(trust))

    assert delivery == Delivery(
        302, error="redirect refused (302 to https://169.254.169.254/latest/meta-data/)"
    )
    assert len(server.received) == 1


async def test_a_receiver_that_never_answers_times_out_retryably(
    server: Server, trust: ssl.SSLContext
) -> None:
    with pytest.raises(OutboundRetryable, match=r"timed out after 0\.3s"):
        await post(server.url("/slow"), policy(trust, timeout=0.3))
    assert len(server.received) == 1


async def test_a_closed_port_is_retried(trust: ssl.SSLContext) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there any more: connection refused.
    with pytest.raises(OutboundRetryable, match="cannot connect to localhost"):
        await post(f"https://localhost:{port}/ok", policy(trust))


# --- TLS -----------------------------------------------------------------------------------


async def test_the_pinned_connection_still_verifies_the_name(
    ca: trustme.CA, trust: ssl.SSLContext
) -> None:
    # We connect to 127.0.0.1, and the certificate is valid for 127.0.0.1, but not for the name
    # in the URL: verification is against the name, so this must fail.
    only_ip = await start_server(ca, "127.0.0.1")
    try:
        with pytest.raises(OutboundRetryable, match="CERTIFICATE_VERIFY_FAILED"):
            await post(only_ip.url("/ok"), policy(trust))
        assert only_ip.received == []
    finally:
        await only_ip.stop()


async def test_by_default_only_public_cas_are_trusted(
    server: Server, trust: ssl.SSLContext
) -> None:
    with pytest.raises(OutboundRetryable, match="CERTIFICATE_VERIFY_FAILED"):
        await post(server.url("/ok"), policy(trust, verify=True))
    assert server.received == []


# --- refused before any connection ---------------------------------------------------------


async def test_a_host_off_the_allowlist_is_refused(server: Server, trust: ssl.SSLContext) -> None:
    outbound = policy(trust, allowed_hosts=frozenset({"hooks.example.com"}))
    with pytest.raises(OutboundRefused, match="host 'localhost' is not in allowed_hosts"):
        await post(server.url("/ok"), outbound)
    assert server.received == []


async def test_an_empty_allowlist_allows_nothing(server: Server, trust: ssl.SSLContext) -> None:
    with pytest.raises(OutboundRefused, match="not in allowed_hosts"):
        await post(server.url("/ok"), policy(trust, allowed_hosts=frozenset()))


async def test_localhost_is_refused_unless_loopback_is_an_allowed_network(
    server: Server, trust: ssl.SSLContext
) -> None:
    with pytest.raises(OutboundRefused, match=r"localhost resolves to \S+ \(loopback\)"):
        await post(server.url("/ok"), policy(trust, allowed_networks=()))
    with pytest.raises(OutboundRefused, match="loopback"):
        await post(server.url("/ok"), policy(trust, allowed_networks=("10.0.0.0/8",)))
    assert server.received == []

    assert (await post(server.url("/ok"), policy(trust))).ok


async def test_an_allowlisted_loopback_literal_is_still_refused(
    server: Server, trust: ssl.SSLContext
) -> None:
    outbound = policy(trust, allowed_hosts=frozenset({"127.0.0.1"}), allowed_networks=())
    with pytest.raises(
        OutboundRefused,
        match=r"refused: host 127\.0\.0\.1 \(loopback\), which is not in allowed_networks",
    ):
        await post(server.url("/ok", host="127.0.0.1"), outbound)
    assert server.received == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("169.254.169.254", "link-local, the cloud metadata endpoint"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.0.1", "private"),
        ("100.64.0.1", "non-global"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[fe80::1]", "link-local"),
        ("[fd00::1]", "private"),
        ("[ff02::1]", "multicast"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
        ("[::ffff:169.254.169.254]", "IPv4-mapped link-local, the cloud metadata endpoint"),
        ("[64:ff9b::a00:1]", "NAT64 private"),
        ("[2002:7f00:1::1]", "6to4 loopback"),
        ("2130706433", "loopback"),  # 127.0.0.1 as one decimal number, which getaddrinfo accepts
        ("0x7f.1", "loopback"),
    ],
)
async def test_internal_addresses_are_refused_even_when_allowlisted(
    trust: ssl.SSLContext, host: str, reason: str
) -> None:
    bare = host.strip("[]")
    outbound = policy(trust, allowed_hosts=frozenset({bare}), allowed_networks=())
    with pytest.raises(
        OutboundRefused, match=re.escape(f" ({reason}), which is not in allowed_networks")
    ):
        await post(f"https://{host}/hook", outbound)


async def test_an_allowed_network_opens_exactly_that_network(
    server: Server, trust: ssl.SSLContext
) -> None:
    hosts = frozenset({"127.0.0.1", "127.0.0.2", "192.168.0.1"})
    outbound = policy(trust, allowed_hosts=hosts, allowed_networks=("127.0.0.1/32", "10.0.0.0/8"))

    assert (await post(server.url("/ok", host="127.0.0.1"), outbound)).ok
    with pytest.raises(OutboundRefused, match=r"127\.0\.0\.2 \(loopback\)"):
        await post(server.url("/ok", host="127.0.0.2"), outbound)
    with pytest.raises(OutboundRefused, match=r"192\.168\.0\.1 \(private\)"):
        await post(server.url("/ok", host="192.168.0.1"), outbound)
    assert len(server.received) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@localhost/ok",
        "ftp://localhost/ok",
        "file:///etc/passwd",
        "https:///no-host",
        "localhost/ok",
    ],
)
async def test_malformed_or_credentialed_urls_are_refused(trust: ssl.SSLContext, url: str) -> None:
    with pytest.raises(OutboundRefused):
        await post(url, policy(trust))


async def test_wildcards_match_subdomains_only(server: Server, trust: ssl.SSLContext) -> None:
    wildcard = policy(trust, allowed_hosts=frozenset({"*.example.com", "Exact.Example.ORG."}))

    assert wildcard.allows_host("hooks.example.com")
    assert wildcard.allows_host("a.b.example.com")
    assert wildcard.allows_host("exact.example.org")
    assert not wildcard.allows_host("example.com")
    assert not wildcard.allows_host("badexample.com")
    assert not wildcard.allows_host("example.com.evil.net")
    assert not wildcard.allows_host("sub.exact.example.org")
    assert wildcard.allows_host("HOOKS.example.com.")
    # End to end: "*.localhost" does not cover localhost itself.
    with pytest.raises(OutboundRefused, match="not in allowed_hosts"):
        await post(server.url("/ok"), policy(trust, allowed_hosts=frozenset({"*.localhost"})))
    # A name in the URL is matched case-insensitively and without its trailing dot.
    assert (await post(server.url("/ok", host="LocalHost."), policy(trust))).ok


# --- misuse fails loudly, before any I/O ---------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"allowed_hosts": frozenset({"https://hooks.example.com"})},
        {"allowed_hosts": frozenset({"hooks.example.com/path"})},
        {"allowed_hosts": frozenset({"*"})},
        {"allowed_hosts": frozenset({"a.*.example.com"})},
        {"allowed_hosts": frozenset({"hooks.example.com:8443"})},
        {"allowed_hosts": frozenset(), "allowed_networks": ("10.0.0.1/8",)},
        {"allowed_hosts": frozenset(), "allowed_networks": ("not a network",)},
        {"allowed_hosts": frozenset(), "timeout": 0},
    ],
)
def test_a_malformed_policy_is_refused_at_construction(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        OutboundPolicy(**settings)


async def test_bad_arguments_raise_before_any_request(
    server: Server, trust: ssl.SSLContext
) -> None:
    url, outbound = server.url("/ok"), policy(trust)
    with pytest.raises(TypeError):
        await post(url, outbound, {"when": datetime.now(UTC)})
    with pytest.raises(ValueError):
        await post_json(url, {}, policy=outbound, idempotency_key="a\r\nX: y", secret=SECRET)
    with pytest.raises(ValueError):
        await post_json(url, {}, policy=outbound, idempotency_key=KEY, secret=b"")
    assert server.received == []
