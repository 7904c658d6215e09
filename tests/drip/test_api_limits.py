"""The rate limits under real ``drip api`` processes: the server's own proxy-header rule is off
(uvicorn believed ``X-Forwarded-For`` from any loopback peer), only ``DRIP_TRUSTED_PROXIES``
decides who the client is, and separate processes on one database share one limit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from contacts.db import create_db_engine
from tests.postgres import postgres_url
from tests.support import EXAMPLES, free_port, venv_binary

STARTUP_SECONDS = 30.0
BOT = {"email": "bot@example.com", "consent": "yes", "website": "spam"}  # the honeypot

Start = Callable[..., str]


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Start]:
    """Start ``drip api`` with ``args`` and ``DRIP_*`` overrides; its base URL once healthy.
    Every process started shares ``tmp_path/.drip`` (and so the SQLite database)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> str:
        port = free_port()
        log = tmp_path / f"api-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [venv_binary("drip"), "api", *args],
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
                    "DRIP_HOME": str(tmp_path / ".drip"),
                    "DRIP_WORKSPACE": str(EXAMPLES),
                    "DRIP_API_PORT": str(port),
                    "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # none: the sweep routes
                    **env,
                },
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"drip api exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            if time.monotonic() > deadline:
                pytest.fail(f"drip api did not answer /healthz in time:\n{log.read_text()}")
            time.sleep(0.05)

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _post(url: str, forwarded_for: str = "", body: dict[str, str] = BOT) -> int:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    return httpx.post(f"{url}/forms/newsletter", json=body, headers=headers, timeout=10).status_code


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_a_rotating_forwarded_for_does_not_escape_the_limit(start_api: Start, server: str) -> None:
    url = start_api("--server", server)
    codes = [_post(url, f"198.51.100.{n}") for n in range(11)]
    assert codes == [202] * 10 + [429]


def test_behind_a_trusted_proxy_each_client_is_limited_and_recorded(
    start_api: Start, tmp_path: Path
) -> None:
    url = start_api(DRIP_TRUSTED_PROXIES='["127.0.0.1"]')
    assert [_post(url, "198.51.100.1") for _ in range(11)] == [202] * 10 + [429]
    good = {"email": "ann@example.com", "consent": "yes"}
    assert _post(url, "192.0.2.66, 198.51.100.2", good) == 202
    db = create_db_engine(f"sqlite:///{tmp_path / '.drip' / 'drip.db'}")
    try:
        with db.connect() as c:
            ip = c.execute(sa.text("SELECT consent_ip FROM contacts")).scalar_one()
    finally:
        db.dispose()
    assert ip == "198.51.100.2"


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_two_api_processes_share_one_limit(
    start_api: Start, request: pytest.FixtureRequest, database: str
) -> None:
    env = {"DRIP_DATABASE_URL": postgres_url(request)} if database == "postgresql" else {}
    first, second = start_api(**env), start_api("--server", "uvicorn", **env)
    assert [_post((first, second)[n % 2]) for n in range(10)] == [202] * 10
    assert _post(first) == 429 and _post(second) == 429


def test_granian_worker_processes_share_one_limit(start_api: Start, tmp_path: Path) -> None:
    url = start_api("--workers", "2")
    log = tmp_path / f"api-{url.rsplit(':', 1)[1]}.log"
    deadline = time.monotonic() + STARTUP_SECONDS
    while "Started worker-2" not in log.read_text():
        assert time.monotonic() < deadline, "the second worker did not start"
        time.sleep(0.05)
    # a new connection a post: the kernel hands them to either worker
    codes = [_post(url) for _ in range(20)]
    assert codes == [202] * 10 + [429] * 10
