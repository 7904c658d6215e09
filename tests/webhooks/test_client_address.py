"""Who the client is: the peer, unless the peer is a proxy in ``DRIP_TRUSTED_PROXIES``, whose
forwarding header is then walked from the right. Every use of the address follows that one
rule: the form rate limit, the consent IP, the tracking hit's IP, the scheme."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from starlette.types import Receive, Scope, Send

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from drip.settings import Settings
from tests.support import MAIL_CLIENT, sent_message
from webhooks.main import create_app
from webhooks.middleware import ClientAddressMiddleware, TrustedProxies
from workflows.deploy import deploy_workspace

PROXY = ("10.0.0.5", 41000)
PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
BOT = {"email": "bot@example.com", "consent": "yes", "website": "spam"}  # the honeypot

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(settings: Settings, workspace: Workspace, engine: Engine) -> Client:
    """The app over ASGI as seen from ``peer``, with ``settings`` changed by ``update``."""
    deploy_workspace(engine, workspace)

    @asynccontextmanager
    async def connect(peer: tuple[str, int], **update: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=update), workspace, engine=engine)
        transport = httpx.ASGITransport(app=app, client=peer)
        try:
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://testserver",
                headers={"user-agent": MAIL_CLIENT},
            ) as http:
                yield http
        finally:
            app.state.hits.close()

    return connect


async def _post(http: httpx.AsyncClient, forwarded_for: str, body: dict[str, str]) -> int:
    r = await http.post("/forms/newsletter", json=body, headers={"x-forwarded-for": forwarded_for})
    return r.status_code


def _consent_ip(engine: Engine, email: str) -> str | None:
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, email)
        assert contact is not None
        return contact.consent_ip


async def test_a_rotating_forwarded_for_from_an_untrusted_peer_is_one_client(
    client: Client, engine: Engine
) -> None:
    # trusting some proxies does not make every peer one
    async with client(("203.0.113.9", 5000), trusted_proxies=PROXIES) as http:
        codes = [await _post(http, f"198.51.100.{n}", BOT) for n in range(11)]
        assert codes == [202] * 10 + [429]
    async with client(("203.0.113.10", 5000)) as http:  # nobody trusted: the default
        good = {"email": "ann@example.com", "consent": "yes"}
        assert await _post(http, "198.51.100.77", good) == 202
    assert _consent_ip(engine, "ann@example.com") == "203.0.113.10"


async def test_behind_a_trusted_proxy_each_client_has_its_own_limit_and_consent_ip(
    client: Client, engine: Engine
) -> None:
    async with client(PROXY, trusted_proxies=PROXIES) as http:
        assert [await _post(http, "198.51.100.1", BOT) for _ in range(10)] == [202] * 10
        assert await _post(http, "198.51.100.1", BOT) == 429
        # what the client wrote itself is left of what the proxy appended: never reached
        assert await _post(http, "198.51.100.2, 198.51.100.1", BOT) == 429
        good = {"email": "bob@example.com", "consent": "yes"}
        assert await _post(http, "192.0.2.66, 198.51.100.2", good) == 202
        # a chain of trusted proxies is walked past, to the first address that is not one
        cy = {**good, "email": "cy@example.com"}
        assert await _post(http, "198.51.100.3, 10.9.9.9", cy) == 202
    assert _consent_ip(engine, "bob@example.com") == "198.51.100.2"
    assert _consent_ip(engine, "cy@example.com") == "198.51.100.3"


async def test_forwarded_rfc_7239_when_the_proxies_write_it(client: Client, engine: Engine) -> None:
    async with client(PROXY, trusted_proxies=PROXIES, proxy_header="forwarded") as http:
        r = await http.post(
            "/forms/newsletter",
            json={"email": "dee@example.com", "consent": "yes"},
            headers={
                "forwarded": 'for=192.0.2.1, for="[2001:db8:cafe::17]:4711";proto=https',
                "x-forwarded-for": "192.0.2.99",  # not the header these proxies write
            },
        )
        assert r.status_code == 202
    assert _consent_ip(engine, "dee@example.com") == "2001:db8:cafe::17"


async def test_a_tracking_hit_records_the_clients_address(
    client: Client, engine: Engine, settings: Settings
) -> None:
    token = sent_message(engine, settings.secret(), "eve@example.com")
    async with client(PROXY, trusted_proxies=PROXIES) as http:
        for forwarded_for in ["198.51.100.8", ""]:
            r = await http.get(f"/t/o/{token}.gif", headers={"x-forwarded-for": forwarded_for})
            assert r.status_code == 200
    # the app's hit writer stored its buffer when the client closed
    with engine.connect() as c:
        ips = c.execute(sa.text("SELECT ip FROM hits ORDER BY id")).scalars().all()
    # without a forwarded address the proxy itself is the client
    assert ips == ["198.51.100.8", "10.0.0.5"]


async def _scope_seen(peer: tuple[str, int], headers: dict[str, str]) -> tuple[Any, str]:
    """(client, scheme) an app behind ``ClientAddressMiddleware`` sees."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(client=scope["client"], scheme=scope["scheme"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = ClientAddressMiddleware(app, proxies=TrustedProxies(PROXIES))
    transport = httpx.ASGITransport(app=wrapped, client=peer)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/", headers=headers)).status_code == 204
    return seen["client"], seen["scheme"]


async def test_the_scheme_comes_from_trusted_proxies_only() -> None:
    https = {"x-forwarded-proto": "https", "x-forwarded-for": "198.51.100.4"}
    assert await _scope_seen(PROXY, https) == (("198.51.100.4", 0), "https")
    assert await _scope_seen(("203.0.113.9", 7), https) == (("203.0.113.9", 7), "http")
    # one proto per hop when every proxy appends: the client's hop's
    chained = {"x-forwarded-proto": "https, http", "x-forwarded-for": "198.51.100.4, 10.1.1.1"}
    assert await _scope_seen(PROXY, chained) == (("198.51.100.4", 0), "https")
    odd = {"x-forwarded-proto": "gopher", "x-forwarded-for": "198.51.100.4"}
    assert await _scope_seen(PROXY, odd) == (("198.51.100.4", 0), "http")


def test_trusted_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIP_TRUSTED_PROXIES", '["10.0.0.0/8", "::1", "192.0.2.7"]')
    monkeypatch.setenv("DRIP_PROXY_HEADER", "forwarded")
    settings = Settings(_env_file=None)
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]
    assert settings.proxy_header == "forwarded"
    assert Settings(_env_file=None, trusted_proxies=[]).trusted_proxies == []
    monkeypatch.setenv("DRIP_TRUSTED_PROXIES", '["nginx"]')
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(_env_file=None)
