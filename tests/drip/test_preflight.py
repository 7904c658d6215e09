"""``drip worker`` warns once at start, never once per send, when a production deployment links
over plain http or nobody DKIM-signs its mail; a configured one, and ``drip dev`` on its
defaults, say nothing. The commands run as processes, as an operator runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from drip.preflight import deployment_warnings
from drip.settings import Settings
from tests.e2e.conftest import WorkerProcess, temporal_target
from tests.support import EXAMPLES, SmtpServer, api_client, free_port, venv_binary

HEADLINE = "about this production deployment"
HTTP = "DRIP_PUBLIC_BASE_URL is http://mail.acme.example, not https"
NO_DKIM = "DKIM is not configured"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(tmp_path / ".drip"),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens: it stops there
        "COLUMNS": "300",
        **extra,
    }


def _worker(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_binary("drip"), "worker"],
        env=_env(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _dkim_key(tmp_path: Path) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


PRODUCTION = {"DRIP_ENV": "production", "DRIP_SECRET_KEY": "s" * 40}


def test_a_production_worker_over_http_without_dkim_warns_at_start(tmp_path: Path) -> None:
    run = _worker(
        tmp_path,
        **PRODUCTION,
        DRIP_PUBLIC_BASE_URL="http://mail.acme.example",
        DRIP_LOG_FORMAT="text",
    )
    assert run.returncode == 1  # Temporal is unreachable; the warnings came before that
    assert run.stderr.count(HEADLINE) == 1
    assert "drip worker: 2 warnings" in run.stderr
    assert run.stderr.count(HTTP) == 1 and run.stderr.count(NO_DKIM) == 1
    assert "WARNING" in run.stderr and "drip.preflight" in run.stderr
    assert run.stderr.index(HEADLINE) < run.stderr.index("cannot reach Temporal")


def test_a_configured_production_worker_does_not_warn(tmp_path: Path) -> None:
    run = _worker(
        tmp_path,
        **PRODUCTION,
        DRIP_PUBLIC_BASE_URL="https://mail.acme.example",
        DRIP_DKIM_DOMAIN="acme.example",
        DRIP_DKIM_SELECTOR="drip",
        DRIP_DKIM_PRIVATE_KEY=str(_dkim_key(tmp_path)),
    )
    assert run.returncode == 1 and "cannot reach Temporal" in run.stderr
    assert HEADLINE not in run.stderr and "drip.preflight" not in run.stderr


def test_a_relay_that_signs_silences_only_the_dkim_warning() -> None:
    base = Settings(env="production", secret_key="s" * 40, public_base_url="http://x.example")
    assert [w.split(":")[0] for w in deployment_warnings(base)] == [
        "DRIP_PUBLIC_BASE_URL is http",
        "DKIM is not configured",
    ]
    relay = base.model_copy(
        update={"dkim_signed_by_relay": True, "public_base_url": "https://x.example"}
    )
    assert deployment_warnings(relay) == []
    assert deployment_warnings(Settings()) == []  # the defaults are development's
    # the same http URL and no DKIM outside production: nothing to warn about
    assert deployment_warnings(Settings(public_base_url="http://mail.acme.example")) == []


def test_drip_dev_on_its_defaults_warns_about_nothing(tmp_path: Path) -> None:
    """Plain-http localhost links and unsigned mail into the local mailbox are what development
    is; ``drip dev`` stops here at its own port check, after the point where it would warn."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path, DRIP_API_PORT=str(port))
        del env["DRIP_TEMPORAL_ADDRESS"]
        run = subprocess.run(
            [venv_binary("drip"), "dev"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1 and "DRIP_API_PORT" in run.stderr
    assert HEADLINE not in run.stdout + run.stderr
    assert NO_DKIM not in run.stdout + run.stderr


@pytest.mark.e2e
async def test_the_warnings_come_once_per_start_not_once_per_send(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """A production worker (JSON logs) that sends several emails logs each warning once."""
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    worker.env["DRIP_ENV"] = "production"  # with the API's secret key, which it sets
    worker.env["DRIP_PUBLIC_BASE_URL"] = "http://mail.acme.example"
    people = [f"p{i}@example.com" for i in range(3)]
    try:
        worker.start()
        async with api_client(
            settings, load_workspace(settings.workspace), engine, dev_env.client
        ) as http:
            for email in people:
                posted = await http.post(
                    "/forms/newsletter", json={"email": email, "first_name": "P", "consent": True}
                )
                assert posted.status_code == 202, posted.text
        await smtp.mailbox.wait_for(lambda m: len(m.messages) >= len(people), within=120)
    finally:
        worker.stop()
    log = worker.log.read_text()
    warnings = [
        entry["message"]
        for line in log.splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("logger") == "drip.preflight"
    ]
    assert len(warnings) == 2, log
    assert warnings[0].startswith(HTTP) and warnings[1].startswith(NO_DKIM)
    levels = {json.loads(line)["level"] for line in log.splitlines() if "drip.preflight" in line}
    assert levels == {"WARNING"}
    assert log.count(HEADLINE) == 1
