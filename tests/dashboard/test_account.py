"""The account page over HTTP, against the real app: every role sees it, and changing the password
proves the current one, keeps to the rules, is CSRF-checked and signs out every other browser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import DashboardSession, User
from drip.settings import Settings
from tests.dashboard.support import PASSWORD, form_csrf, make_user, sign_in
from tests.support import api_client

NEW = "purple elephant violin sunrise"


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    make_user(engine, "mia@example.com", "marketer", "Mia")
    make_user(engine, "sam@example.com", "sales", "Sam")
    make_user(engine, "ada@example.com", "admin", "Ada")
    async with api_client(settings, workspace, engine) as client:
        yield client


async def _change(
    http: httpx.AsyncClient,
    current: str = PASSWORD,
    new: str = NEW,
    repeat: str | None = None,
    csrf: str | None = None,
) -> httpx.Response:
    if csrf is None:
        csrf = form_csrf((await http.get("/dashboard/account")).text)
    return await http.post(
        "/dashboard/account/password",
        data={
            "csrf_token": csrf,
            "current_password": current,
            "new_password": new,
            "new_password_repeat": new if repeat is None else repeat,
        },
    )


def _hash(engine: Engine, email: str = "mia@example.com") -> str:
    with session_scope(engine) as s:
        return s.exec(select(User).where(User.email == email)).one().password_hash


@pytest.mark.parametrize(
    ("email", "name", "role"),
    [
        ("mia@example.com", "Mia", "marketer"),
        ("sam@example.com", "Sam", "sales"),
        ("ada@example.com", "Ada", "admin"),
    ],
)
async def test_every_role_has_an_account_page_linked_from_every_page(
    http: httpx.AsyncClient, email: str, name: str, role: str
) -> None:
    await sign_in(http, email)
    first = await http.get((await http.get("/dashboard")).headers["location"])
    assert '<a href="/dashboard/account">Account</a>' in first.text
    page = await http.get("/dashboard/account")
    assert page.status_code == 200
    assert f'data-fact="name">{name}<' in page.text
    assert f'data-fact="email">{email}<' in page.text
    assert f'data-fact="role">{role}<' in page.text
    assert '<a href="/dashboard/account" aria-current="page">Account</a>' in page.text


async def test_the_form_is_labelled_for_people_and_password_managers(
    http: httpx.AsyncClient,
) -> None:
    await sign_in(http, "mia@example.com")
    html = (await http.get("/dashboard/account")).text
    fields = {
        "current_password": "current-password",
        "new_password": "new-password",
        "new_password_repeat": "new-password",
    }
    for field, autocomplete in fields.items():
        assert f'<label for="{field}">' in html, field
        tag = re.search(rf'<input id="{field}"[^>]*>', html)
        assert tag, field
        assert f'name="{field}"' in tag[0] and 'type="password"' in tag[0]
        assert f'autocomplete="{autocomplete}"' in tag[0] and "required" in tag[0]
    assert 'aria-describedby="new_password-hint"' in html
    assert 'autocomplete="username" value="mia@example.com"' in html
    assert "aria-invalid" not in html and 'role="alert"' not in html


async def test_not_signed_in_goes_to_sign_in(http: httpx.AsyncClient) -> None:
    r = await http.get("/dashboard/account")
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login?next=/dashboard/account"


async def test_a_change_keeps_this_browser_and_signs_out_the_others(
    settings: Settings, workspace: Workspace, engine: Engine, http: httpx.AsyncClient
) -> None:
    async with api_client(settings, workspace, engine) as thief:
        assert (await sign_in(thief, "mia@example.com")).status_code == 303
        assert (await sign_in(http, "mia@example.com")).status_code == 303
        async with api_client(settings, workspace, engine) as other_user:
            await sign_in(other_user, "sam@example.com")
            r = await _change(http)
            assert r.status_code == 303
            assert r.headers["location"] == "/dashboard/account?changed=true"
            done = await http.get(r.headers["location"])
            assert done.status_code == 200 and 'role="status"' in done.text
            assert "Your password has been changed" in done.text
            assert (await http.get("/dashboard/campaigns")).status_code == 200
            gone = await thief.get("/dashboard/campaigns")  # the old password's browser
            assert gone.status_code == 303
            assert gone.headers["location"].startswith("/dashboard/login")
            assert (await other_user.get("/dashboard/leads")).status_code == 200
    with session_scope(engine) as s:
        assert len(s.exec(select(DashboardSession)).all()) == 2  # this browser and Sam's
    async with api_client(settings, workspace, engine) as fresh:
        assert (await sign_in(fresh, "mia@example.com", PASSWORD)).status_code == 401
        assert (await sign_in(fresh, "mia@example.com", NEW)).status_code == 303


async def test_a_wrong_current_password_changes_nothing(
    settings: Settings, workspace: Workspace, engine: Engine, http: httpx.AsyncClient
) -> None:
    async with api_client(settings, workspace, engine) as elsewhere:
        await sign_in(elsewhere, "mia@example.com")
        await sign_in(http, "mia@example.com")
        before = _hash(engine)
        r = await _change(http, current="not my password")
        assert r.status_code == 422
        assert "That is not your current password." in r.text
        assert 'id="current_password-error"' in r.text
        assert re.search(r'<input id="current_password"[^>]*aria-invalid="true"', r.text)
        assert "not my password" not in r.text and NEW not in r.text  # never echoed
        assert _hash(engine) == before
        assert (await elsewhere.get("/dashboard/campaigns")).status_code == 200


@pytest.mark.parametrize(
    ("current", "new", "repeat", "field", "says"),
    [
        (PASSWORD, NEW, NEW + "!", "new_password_repeat", "The two new passwords do not match."),
        (PASSWORD, "short", "short", "new_password", "The password needs at least 10 characters."),
        (PASSWORD, PASSWORD, PASSWORD, "new_password", "must differ from the current one"),
        ("", NEW, NEW, "current_password", "Type your current password."),
        (PASSWORD, "x" * 1001, "x" * 1001, "new_password", "at most 1000 characters"),
    ],
)
async def test_rules_are_enforced_beside_their_field(
    http: httpx.AsyncClient,
    engine: Engine,
    current: str,
    new: str,
    repeat: str,
    field: str,
    says: str,
) -> None:
    await sign_in(http, "mia@example.com")
    before = _hash(engine)
    r = await _change(http, current=current, new=new, repeat=repeat)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/html")
    error = re.search(rf'<p class="error field-error" id="{field}-error">([^<]*)</p>', r.text)
    assert error and says in error[1]
    tag = re.search(rf'<input id="{field}"[^>]*>', r.text)
    assert tag and 'aria-invalid="true"' in tag[0] and f"{field}-error" in tag[0]
    assert "autofocus" in tag[0]
    assert "Your password was not changed" in r.text
    assert _hash(engine) == before
    assert (await http.get("/dashboard/campaigns")).status_code == 200


async def test_a_forged_or_missing_csrf_token_is_403(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    await sign_in(http, "mia@example.com")
    before = _hash(engine)
    assert (await _change(http, csrf="forged")).status_code == 403
    missing = await http.post(
        "/dashboard/account/password",
        data={"current_password": PASSWORD, "new_password": NEW, "new_password_repeat": NEW},
    )
    assert missing.status_code == 403 and "Form expired" in missing.text
    assert _hash(engine) == before


async def test_guessing_the_current_password_shares_the_sign_in_limit(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    await sign_in(http, "mia@example.com")  # a success: not one of the address's five
    before = _hash(engine)
    codes = [(await _change(http, current=f"guess number {n}")).status_code for n in range(5)]
    assert codes == [422] * 5
    r = await _change(http)  # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "Too many password attempts" in r.text
    assert _hash(engine) == before
    # a form that breaks the rules proves nothing about the current password: not counted
    rules = await _change(http, repeat="different!!")
    assert rules.status_code == 422 and "do not match" in rules.text
    # one budget per address: the sign-in form waits too, other addresses do not
    assert (await sign_in(http, "mia@example.com")).status_code == 429
    assert (await sign_in(http, "sam@example.com")).status_code == 303
