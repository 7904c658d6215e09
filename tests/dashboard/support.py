"""Helpers of the dashboard tests: users, a lead alert, and signing in as a browser does."""

from __future__ import annotations

import re
import uuid

import httpx
from sqlalchemy.engine import Engine

from contacts import repository, users
from contacts.db import session_scope
from contacts.models import LeadAlert

PASSWORD = "correct horse battery staple"


def make_user(engine: Engine, email: str, role: str, name: str = "") -> None:
    with session_scope(engine) as s:
        users.create_user(s, email, PASSWORD, role, name=name)


def make_alert(engine: Engine, owner: str | None, email: str = "lead@example.com") -> str:
    """An open lead alert for a (new) contact, as the sales engine records one."""
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(
            s, email, {"first_name": "Lee", "last_name": "Ada"}, consent_source="test"
        )
        assert contact.id is not None
        alert_id = uuid.uuid4().hex
        s.add(
            LeadAlert(
                id=alert_id,
                key=f"test:{alert_id}",
                contact_id=contact.id,
                owner=owner,
                reason="became a sales-qualified lead: visited pricing twice",
                channels=["email"],
            )
        )
    return alert_id


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def sign_in(
    http: httpx.AsyncClient, email: str, password: str = PASSWORD, next_: str = "/dashboard"
) -> httpx.Response:
    page = await http.get("/dashboard/login")
    assert page.status_code == 200
    return await http.post(
        "/dashboard/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": form_csrf(page.text),
            "next": next_,
        },
    )
