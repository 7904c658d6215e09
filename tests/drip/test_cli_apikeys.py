"""``drip apikeys create|list|revoke`` as an operator runs them: the real ``drip`` executable,
then the key it printed used against the API."""

from __future__ import annotations

import subprocess

from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.support import api_client, run_drip


def _drip(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_drip(settings, "apikeys", *args)


async def test_create_list_use_and_revoke(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    made = _drip(settings, "create", "crm-sync", "--scope", "contacts:read")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("drip_") and "\n" not in key
    assert "not shown again" in made.stderr

    listed = _drip(settings, "list")
    assert listed.returncode == 0 and "crm-sync" in listed.stdout
    assert key[:13] in listed.stdout and key not in listed.stdout

    async with api_client(settings, workspace, engine) as http:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await http.get("/api/contacts", headers=headers)).status_code == 200
        assert (await http.get("/api/journeys", headers=headers)).status_code == 403

        revoked = _drip(settings, "revoke", key[:13])
        assert revoked.returncode == 0, revoked.stderr
        assert (await http.get("/api/contacts", headers=headers)).status_code == 401
    assert "crm-sync" not in _drip(settings, "list").stdout
    assert "crm-sync" in _drip(settings, "list", "--all").stdout


def test_unknown_scope_and_unknown_key_fail_with_a_sentence(settings: Settings) -> None:
    bad = _drip(settings, "create", "x", "--scope", "contacts:everything")
    assert bad.returncode == 1 and "unknown scope" in bad.stderr and not bad.stdout
    missing = _drip(settings, "revoke", "drip_nothing")
    assert missing.returncode == 1 and "no API key" in missing.stderr
