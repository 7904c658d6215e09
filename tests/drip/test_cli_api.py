"""``drip api`` as production runs it: granian by default, uvicorn on request, a graceful stop
that stores the last tracking hits, and one red line when it cannot start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from contacts import outbox, repository
from contacts.db import create_db_engine, session_scope
from contacts.models import Message
from tests.support import EXAMPLES, MAIL_CLIENT, free_port, venv_binary

STARTUP_SECONDS = 15.0


def _env(home: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(home / ".drip"),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_API_PORT": str(port),
        # nothing listens there: the API serves without Temporal (events wait for the sweep)
        "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "COLUMNS": "300",
        **extra,
    }


class Api:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, home: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.db = home / ".drip" / "drip.db"
        self.home = home

    def output(self) -> tuple[str, str]:
        return (self.home / "out.log").read_text(), (self.home / "err.log").read_text()

    def hits(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute("SELECT kind, token FROM hits ORDER BY id"))

    def wait_for(self, text: str, within: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + within
        while text not in "".join(self.output()):
            assert time.monotonic() < deadline, f"no {text!r} in the output"
            time.sleep(0.05)

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        # longer than granian's 30 s before it kills a worker that missed the signal (one
        # still starting its app on a loaded machine), so that case fails on the assertions
        # about what was flushed, not on a timeout here
        code = self.proc.wait(timeout=45)
        return (code, *self.output())


StartApi = Callable[..., Api]


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[StartApi]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> Api:
        port = free_port()
        with (tmp_path / "out.log").open("wb") as out, (tmp_path / "err.log").open("wb") as err:
            proc = subprocess.Popen(
                [venv_binary("drip"), "api", *args],
                env=_env(tmp_path, port, **env),
                cwd=tmp_path,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, so cleanup reaches the workers
            )
        started.append(proc)
        api = Api(proc, port, tmp_path)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"drip api exited with {proc.returncode}:\n{api.output()}")
            try:
                if httpx.get(f"{api.url}/healthz", timeout=1).status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("drip api did not answer /healthz in time")
            time.sleep(0.05)

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _pixel(api: Api, token: str) -> httpx.Response:
    return httpx.get(f"{api.url}/t/o/{token}.gif", headers={"user-agent": MAIL_CLIENT}, timeout=5)


def _sent_messages(api: Api, *open_tokens: str) -> None:
    """Messages with these pixel tokens in the API's database (only known tokens are stored)."""
    engine = create_db_engine(f"sqlite:///{api.db}")
    try:
        with session_scope(engine) as s:
            contact, _ = repository.upsert_contact(s, email="ann@example.com", consent_source="t")
            assert contact.id is not None
            for token in open_tokens:
                outbox.reserve_message(
                    s,
                    Message(
                        id=token,
                        key=token,
                        contact_id=contact.id,
                        campaign_id="welcome",
                        step_id="welcome",
                        workflow_id=f"journey/welcome/{contact.id}/1",
                        template="welcome",
                        open_token=token,
                    ),
                )
    finally:
        engine.dispose()


def test_granian_serves_stores_hits_and_flushes_on_sigterm(start_api: StartApi) -> None:
    api = start_api(DRIP_LOG_FORMAT="json")
    first_token, last_token = "first-hit-0123456789", "last-hit-0123456789"
    _sent_messages(api, first_token, last_token)

    first = _pixel(api, first_token)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/gif"
    assert first.content.startswith(b"GIF89a")
    # an unknown token gets the GIF too, and is counted, not stored
    assert _pixel(api, "no-such-token-0123456789").content == first.content
    # stored while serving (the writer flushes every 0.25 s)
    deadline = time.monotonic() + 5
    while ("open", first_token) not in api.hits():
        assert time.monotonic() < deadline, "the hit was not stored while serving"
        time.sleep(0.05)

    # a hit answered just before SIGTERM is stored by the lifespan's flush, not lost
    assert _pixel(api, last_token).status_code == 200
    code, out, err = api.stop()
    assert code == 0, err
    assert api.hits() == [("open", first_token), ("open", last_token)]
    assert "Traceback" not in out + err

    # JSON logs: granian's own lines and drip's access lines, one object a line, no
    # granian access log (drip.access replaces it)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    loggers = {r["logger"] for r in records}
    assert "_granian" in loggers
    assert any(r["logger"] == "drip.access" and r.get("path") == "/healthz" for r in records)
    assert "granian.access" not in loggers
    assert 'HTTP/1.1" 200' not in out + err


def test_granian_with_two_worker_processes(start_api: StartApi) -> None:
    api = start_api("--workers", "2")
    # granian loses a stop signal that reaches a worker still starting (it is killed after
    # 30 s): a worker that never served has no hits, but let both start here
    api.wait_for("Started worker-2")
    tokens = [f"hit-{n}-0123456789abcdef" for n in range(4)]
    _sent_messages(api, *tokens)
    for token in tokens:
        assert _pixel(api, token).status_code == 200
    code, out, err = api.stop()
    assert code == 0, err
    assert out.count("Started worker-") == 2
    assert sorted(api.hits()) == [("open", token) for token in tokens]


def test_uvicorn_on_request(start_api: StartApi) -> None:
    api = start_api("--server", "uvicorn")
    _sent_messages(api, "uv-hit-0123456789abcdef")
    assert _pixel(api, "uv-hit-0123456789abcdef").status_code == 200
    code, out, err = api.stop()
    assert code == 0, err
    assert "Uvicorn running" in out + err
    assert api.hits() == [("open", "uv-hit-0123456789abcdef")]


def _run_api(tmp_path: Path, port: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_binary("drip"), "api", *args],
        env=_env(tmp_path, port, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_settings_are_one_red_line(tmp_path: Path) -> None:
    run = _run_api(tmp_path, free_port(), DRIP_LOG_FORMAT="yaml")
    assert run.returncode == 1
    assert "invalid settings" in run.stderr and "log_format" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_uvicorn_is_single_process(tmp_path: Path) -> None:
    run = _run_api(tmp_path, free_port(), "--server", "uvicorn", "--workers", "2")
    assert run.returncode == 1
    assert "--workers needs --server granian" in run.stderr


def test_a_taken_port_is_one_red_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _run_api(tmp_path, port)
    assert run.returncode == 1
    assert f"the API could not start on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
