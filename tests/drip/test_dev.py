"""``drip dev`` refuses what cannot work before starting anything, and supervises what it starts.

The supervision tests run the real Temporal dev server and the real mailbox, with stand-ins for
the worker and the API app, so they exercise start order, failure reporting and shutdown
without depending on journeys.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from rich.console import Console

from campaigns import Workspace
from drip._ports import port_is_free
from drip.dev import DevError, check_dev_settings, run_dev
from drip.settings import Settings
from tests.support import EXAMPLES, ROOT, free_port, venv_binary

PORT_SETTINGS = {
    "api_port": "DRIP_API_PORT",
    "temporal_port": "DRIP_TEMPORAL_ADDRESS",
    "temporal_ui_port": "DRIP_TEMPORAL_UI_PORT",
    "smtp_port": "DRIP_SMTP_PORT",
}


def _minimal_workspace(dest: Path) -> Path:
    """The demo's workspace.yaml and form, without campaigns: enough for the stack to start."""
    root = dest / "ws"
    (root / "forms").mkdir(parents=True)
    shutil.copy(EXAMPLES / "workspace.yaml", root)
    shutil.copy(EXAMPLES / "forms" / "newsletter.yaml", root / "forms")
    return root


def _settings(tmp_path: Path, **ports: int) -> Settings:
    chosen = {name: ports.get(name) or free_port() for name in PORT_SETTINGS}
    return Settings(
        home=tmp_path / ".drip",
        workspace=_minimal_workspace(tmp_path),
        api_port=chosen["api_port"],
        temporal_address=f"127.0.0.1:{chosen['temporal_port']}",
        temporal_ui_port=chosen["temporal_ui_port"],
        smtp_host="127.0.0.1",
        smtp_port=chosen["smtp_port"],
        public_base_url=f"http://127.0.0.1:{chosen['api_port']}",
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("field", "variable"), PORT_SETTINGS.items())
async def test_a_taken_port_is_named_with_its_setting_before_anything_starts(
    tmp_path: Path, taken_port: int, field: str, variable: str
) -> None:
    settings = _settings(tmp_path, **{field: taken_port})

    with pytest.raises(DevError) as caught:
        await run_dev(settings, console=Console(file=io.StringIO()))

    assert f"port {taken_port} is taken ({variable})" in str(caught.value)
    assert not settings.home.exists(), "nothing may start when a port is taken"


def test_one_port_for_two_parts_is_refused(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path, api_port=port, smtp_port=port)
    with pytest.raises(DevError, match=r"DRIP_API_PORT\) and the SMTP mailbox \(DRIP_SMTP_PORT"):
        check_dev_settings(settings)


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"temporal_address": "temporal.internal:7233"}, "DRIP_TEMPORAL_ADDRESS"),
        ({"smtp_host": "smtp.sendgrid.net"}, "DRIP_SMTP_HOST"),
    ],
)
def test_dev_refuses_remote_temporal_or_smtp(
    tmp_path: Path, change: dict[str, str], variable: str
) -> None:
    settings = _settings(tmp_path).model_copy(update=change)
    with pytest.raises(DevError, match=variable):
        check_dev_settings(settings)


async def test_a_broken_workspace_lists_its_problems(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (settings.workspace / "campaigns").mkdir()
    (settings.workspace / "campaigns" / "broken.yaml").write_text("id: broken\nsteps: [\n")

    with pytest.raises(DevError) as caught:
        await run_dev(settings, console=Console(file=io.StringIO()))

    assert "has problems" in str(caught.value)
    assert "broken.yaml:" in str(caught.value)
    assert not settings.home.exists()


def _drip(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    return subprocess.run(
        [venv_binary("drip"), *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_dev_prints_the_taken_port_in_red_and_exits_1(tmp_path: Path, taken_port: int) -> None:
    result = _drip(
        ["dev", "--workspace", str(_minimal_workspace(tmp_path))],
        {"DRIP_HOME": str(tmp_path / ".drip"), "DRIP_API_PORT": str(taken_port)},
        tmp_path,
    )
    assert result.returncode == 1
    assert f"port {taken_port} is taken (DRIP_API_PORT)" in result.stderr


def test_cli_version_and_db_upgrade(tmp_path: Path) -> None:
    version = _drip(["--version"], {}, tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("drip ")

    upgrade = _drip(["db", "upgrade"], {"DRIP_HOME": str(tmp_path / "state")}, tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert (tmp_path / "state" / "drip.db").is_file()
    again = _drip(["db", "upgrade"], {"DRIP_HOME": str(tmp_path / "state")}, tmp_path)
    assert again.returncode == 0, again.stderr


# --- supervision, with stand-ins for the worker and the API app -------------------------------


def _fake_stack(monkeypatch: pytest.MonkeyPatch, worker_fails_after: float | None) -> None:
    from webhooks.routes import mailbox

    def create_app(settings: Settings, workspace: Workspace) -> FastAPI:
        app = FastAPI()
        app.state.settings = settings
        app.include_router(mailbox.router)
        return app

    async def run_worker(settings: Settings, workspace: Workspace) -> None:
        if worker_fails_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(worker_fails_after or 0)
        raise RuntimeError("lost the plot")

    main = types.ModuleType("webhooks.main")
    main.create_app = create_app  # type: ignore[attr-defined]
    worker = types.ModuleType("workflows.worker")
    worker.run_worker = run_worker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "webhooks.main", main)
    monkeypatch.setitem(sys.modules, "workflows.worker", worker)


def _all_ports_free(settings: Settings) -> bool:
    ports = [settings.api_port, settings.temporal_port, settings.temporal_ui_port]
    return all(port_is_free("127.0.0.1", p) for p in [*ports, settings.smtp_port])


async def test_a_part_that_dies_is_reported_and_the_rest_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_stack(monkeypatch, worker_fails_after=1.0)
    settings = _settings(tmp_path)

    with pytest.raises(DevError, match="the worker stopped: RuntimeError: lost the plot"):
        await asyncio.wait_for(run_dev(settings, console=Console(file=io.StringIO())), 120)

    assert _all_ports_free(settings)
    assert not (settings.home / "temporal.pid").exists()
    assert (settings.home / "temporal.db").is_file() and (settings.home / "drip.db").is_file()


async def test_sigint_stops_everything_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_stack(monkeypatch, worker_fails_after=None)
    settings = _settings(tmp_path)
    out = io.StringIO()
    run = asyncio.create_task(run_dev(settings, console=Console(file=out, width=200)))
    try:
        for _ in range(1200):
            if run.done() or "Ctrl-C to stop" in out.getvalue():
                break
            await asyncio.sleep(0.05)
        assert not run.done(), run.exception() if not run.cancelled() else "cancelled"
        assert f"{settings.public_base_url}/forms/newsletter" in out.getvalue()
        assert f"http://localhost:{settings.temporal_ui_port}" in out.getvalue()
        async with httpx.AsyncClient(base_url=settings.public_base_url) as http:
            assert (await http.get("/dev/mailbox")).status_code == 200

        os.kill(os.getpid(), signal.SIGINT)  # our handler is installed: pytest never sees it
        await asyncio.wait_for(run, 60)
    finally:
        if not run.done():
            run.cancel()
            with contextlib.suppress(BaseException):
                await run

    assert "stopped" in out.getvalue()
    assert _all_ports_free(settings)
