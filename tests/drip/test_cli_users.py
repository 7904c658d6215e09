"""``drip users create|list|disable`` as an operator runs them: the real ``drip`` executable,
then the user signing in (or not) against the API."""

from __future__ import annotations

import os
import subprocess

from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import User
from drip.settings import Settings
from tests.dashboard.support import PASSWORD, sign_in
from tests.support import EXAMPLES, api_client, venv_binary


def _drip(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(settings.home),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_DATABASE_URL": settings.database_url,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [venv_binary("drip"), "users", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_create_list_sign_in_and_disable(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    made = _drip(
        settings,
        "create",
        "Sam@Example.com",
        "--role",
        "sales",
        "--name",
        "Sam Seller",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert "sam@example.com (sales)" in made.stdout
    with session_scope(engine) as s:
        user = s.exec(select(User)).one()
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash

    again = _drip(
        settings,
        "create",
        "sam@example.com",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert again.returncode == 1 and "exists already" in again.stderr
    short = _drip(
        settings, "create", "x@example.com", "--role", "admin", "--password-stdin", stdin="short\n"
    )
    assert short.returncode == 1 and "at least" in short.stderr
    role = _drip(
        settings,
        "create",
        "x@example.com",
        "--role",
        "boss",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert role.returncode == 2

    listed = _drip(settings, "list")
    assert listed.returncode == 0 and "sam@example.com" in listed.stdout
    assert "Sam Seller" in listed.stdout and "sales" in listed.stdout

    async with api_client(settings, workspace, engine) as http:
        assert (await sign_in(http, "sam@example.com")).status_code == 303
        assert (await http.get("/dashboard/leads")).status_code == 200
        disabled = _drip(settings, "disable", "sam@example.com")
        assert disabled.returncode == 0, disabled.stderr
        assert (await http.get("/dashboard/leads")).status_code == 303  # the session ended
        assert (await sign_in(http, "sam@example.com")).status_code == 401
    assert _drip(settings, "disable", "nobody@example.com").returncode == 1
