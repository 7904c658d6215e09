"""``/api/webhooks`` over HTTP: register, list, change, rotate, remove outgoing webhook
endpoints; deliveries listed; scopes; bad input answered with a problem, never a 500."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.engine import Engine
from standardwebhooks import Webhook

from contacts.db import session_scope
from contacts.webhook_endpoints import WebhookDelivery
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON

NEW = {
    "name": "crm",
    "url": "https://hooks.example.com/drip",
    "event_types": ["contact.created", "message.bounced"],
    "owner_email": "Ops@Example.com",
}


@pytest.fixture
def auth(engine: Engine) -> dict[str, str]:
    return make_key(engine, "webhooks:read", "webhooks:write")


async def test_register_list_change_rotate_and_remove(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    made = await http.post("/api/webhooks", json=NEW, headers=auth)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret"].startswith("whsec_")
    Webhook(body["secret"])  # the reference library accepts it as a key
    assert (body["owner_email"], body["source"], body["enabled"]) == (
        "ops@example.com",
        "api",
        True,
    )
    endpoint = f"/api/webhooks/{body['id']}"

    listed = (await http.get("/api/webhooks", headers=auth)).json()
    assert [e["name"] for e in listed] == ["crm"]
    assert "secret" not in listed[0]

    changed = await http.patch(
        endpoint,
        json={"filter": "properties.campaign == 'welcome'", "enabled": False},
        headers=auth,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["filter"] == 'properties.campaign == "welcome"'
    assert changed.json()["enabled"] is False
    cleared = await http.patch(endpoint, json={"filter": "", "enabled": True}, headers=auth)
    assert (cleared.json()["filter"], cleared.json()["enabled"]) == (None, True)

    rotated = await http.post(f"{endpoint}/rotate-secret", headers=auth)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] != body["secret"]
    assert rotated.json()["rotating_until"] is not None

    with session_scope(engine) as s:
        s.add(
            WebhookDelivery(
                endpoint_id=body["id"], event_seq=1, event_id="evt_x", event_type="contact.created"
            )
        )
    deliveries = (await http.get(f"{endpoint}/deliveries", headers=auth)).json()
    assert [(d["event_id"], d["state"]) for d in deliveries] == [("evt_x", "pending")]
    one = await http.get(f"/api/webhooks/deliveries/{deliveries[0]['id']}", headers=auth)
    assert one.status_code == 200 and one.json()["attempt_log"] == []

    assert (await http.delete(endpoint, headers=auth)).status_code == 204
    assert (await http.get(endpoint, headers=auth)).status_code == 404
    assert (await http.get("/api/webhooks", headers=auth)).json() == []


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "says"),
    [
        ("post", "", {**NEW, "url": "http://hooks.example.com/"}, 422, "https"),
        ("post", "", {**NEW, "url": "https://u:p@hooks.example.com/"}, 422, "https"),
        ("post", "", {**NEW, "event_types": ["contact.teleported"]}, 422, "unknown event type"),
        ("post", "", {**NEW, "event_types": []}, 422, "at least one"),
        ("post", "", {**NEW, "filter": "contact.score > 5"}, 422, "filter"),
        ("post", "", {**NEW, "owner_email": "nope"}, 422, "owner_email"),
        ("post", "", {**NEW, "secret": "whsec_tooshort"}, 422, "secret"),
        ("post", "", {**NEW, "extra": 1}, 422, "extra"),
        ("patch", "/999", {"enabled": True}, 404, "webhook endpoint 999"),
        ("post", "/deliveries/999/resend", None, 404, "webhook delivery 999"),
        ("get", "/999/deliveries", None, 404, "webhook endpoint 999"),
    ],
)
async def test_bad_input_is_a_problem(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    method: str,
    path: str,
    payload: object,
    status: int,
    says: str,
) -> None:
    response = await http.request(
        method.upper(), f"/api/webhooks{path}", json=payload, headers=auth
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert says in response.text


async def test_a_name_is_registered_once(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    assert (await http.post("/api/webhooks", json=NEW, headers=auth)).status_code == 201
    again = await http.post("/api/webhooks", json=NEW, headers=auth)
    assert again.status_code == 409 and "exists already" in again.text


async def test_scopes(http: httpx.AsyncClient, engine: Engine) -> None:
    reader = make_key(engine, "webhooks:read", name="reader")
    other = make_key(engine, "contacts:read", name="other")
    assert (await http.get("/api/webhooks", headers=reader)).status_code == 200
    assert (await http.post("/api/webhooks", json=NEW, headers=reader)).status_code == 403
    assert (await http.get("/api/webhooks", headers=other)).status_code == 403
    assert (await http.get("/api/webhooks")).status_code == 401
