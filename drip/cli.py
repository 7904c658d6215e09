"""The ``drip`` command: ``dev`` for a laptop, ``worker`` and ``api`` for production, and tools.

Each command is a thin shell: it reads the settings, turns known failures into one red sentence
and an exit code, and hands over to the package that does the work. Heavy imports (the worker,
the API app) happen inside the command that needs them, so ``drip --version`` and
``drip db upgrade`` stay quick and work even while those packages are being changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from sqlalchemy import make_url

from campaigns import CampaignError, Workspace, load_workspace
from contacts.db import create_db_engine, migrate
from drip import (
    __version__,
    cli_apikeys,
    cli_broadcasts,
    cli_campaigns,
    cli_contacts,
    cli_deliverability,
    cli_dkim,
    cli_emails,
    cli_journeys,
    cli_messages,
    cli_sales,
    cli_scores,
    cli_suppressions,
    cli_users,
    cli_webhooks,
)
from drip._runtime import ApiServer, run_with_temporal, shared_metrics, stop_on_signals
from drip.preflight import warn_at_start
from drip.settings import Settings, SettingsError

__all__ = ["app"]

app = typer.Typer(
    name="drip",
    help="Marketing automation: campaigns as YAML, journeys on Temporal, honest tracking.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals would print settings and database URLs
)
db_app = typer.Typer(help="The contact database.", no_args_is_help=True)

# Command groups, one module each (drip/cli_<group>.py); add new groups here.
app.add_typer(db_app, name="db")
app.add_typer(cli_campaigns.app, name="campaigns")
app.add_typer(cli_journeys.app, name="journeys")
app.add_typer(cli_broadcasts.app, name="broadcasts")
app.add_typer(cli_contacts.app, name="contacts")
app.add_typer(cli_emails.app, name="emails")
app.add_typer(cli_messages.app, name="messages")
app.add_typer(cli_apikeys.app, name="apikeys")
app.add_typer(cli_scores.app, name="scores")
app.add_typer(cli_sales.app, name="sales")
app.add_typer(cli_users.app, name="users")
app.add_typer(cli_deliverability.app, name="deliverability")
app.add_typer(cli_suppressions.app, name="suppressions")
app.add_typer(cli_dkim.app, name="dkim")
app.add_typer(cli_webhooks.app, name="webhooks")

console = Console()
err = Console(stderr=True)
log = logging.getLogger("drip")

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="workspace folder [default: DRIP_WORKSPACE]", show_default=False
    ),
]


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _settings(**overrides: Any) -> Settings:
    """``DRIP_*`` settings with command-line overrides on top; a bad value is one red line."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (SettingsError, ValidationError) as exc:
        _fail(f"invalid settings: {exc}")


def _log_format(settings: Settings) -> str:
    """``DRIP_LOG_FORMAT``, else JSON lines in production (for a log pipeline), text in dev."""
    return settings.log_format or ("json" if settings.env == "production" else "text")


def _structured_logs(settings: Settings) -> bool:
    """Switch to JSON lines (``webhooks.logs``) when configured; True if it did. Text logs keep the
    ``--verbose`` level, JSON logs are at INFO: the access lines are the point of them."""
    if _log_format(settings) != "json":
        return False
    from webhooks.logs import configure_json_logging

    configure_json_logging()
    return True


def _check_dkim(settings: Settings) -> None:
    """A half-configured DKIM or an unusable key is one red line at start-up, not a failed
    send later."""
    from emails import DkimSigner

    try:
        DkimSigner.from_settings(settings)
    except SettingsError as exc:
        _fail(f"invalid settings: {exc}")


def _workspace(settings: Settings) -> Workspace:
    try:
        return load_workspace(settings.workspace)
    except CampaignError as exc:
        _fail(f"the workspace {settings.workspace} has problems:\n{exc}")


def _migrate(settings: Settings, revision: str = "head") -> None:
    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine, revision)
    finally:
        engine.dispose()


async def _until_stopped(work: Coroutine[Any, Any, object]) -> None:
    """Run ``work`` until it ends or SIGINT/SIGTERM cancels it (a clean stop, exit 0). A second
    signal cancels it again: the worker then stops waiting for the sends it holds."""
    task: asyncio.Task[object] = asyncio.create_task(work)
    with stop_on_signals(task.cancel, task.cancel) as received:
        try:
            await task
        except asyncio.CancelledError:
            if not received:
                raise


def _version(value: bool) -> None:
    if value:
        console.print(f"drip {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    """drip: marketing automation with campaigns as YAML and journeys on Temporal."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=True)],
        force=True,
    )


@app.command()
def dev(workspace: WorkspaceOption = None) -> None:
    """Run everything locally: Temporal, the worker, the API and a mailbox for all email.

    Ports come from DRIP_API_PORT, DRIP_TEMPORAL_ADDRESS, DRIP_TEMPORAL_UI_PORT and
    DRIP_SMTP_PORT; state stays in DRIP_HOME (.drip) across restarts.
    """
    from drip.dev import DevError, run_dev

    settings = _settings(workspace=workspace)
    _check_dkim(settings)
    if settings.env != "dev":
        _fail(
            "drip dev is for development (DRIP_ENV=dev); in production run `drip worker` "
            "and `drip api`"
        )
    warn_at_start(settings, err, "drip dev")  # silent in dev: see drip/preflight.py
    try:
        run_with_temporal(run_dev(settings, console=console))
    except DevError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C before the stack was up: nothing to clean
        pass


def _warn_if_undeployed(settings: Settings, ws: Workspace) -> None:
    """Production runs what is deployed, not what the files say; say so when they differ, since
    that is the first thing to suspect when a campaign "does nothing"."""
    from workflows.deploy import deploy_workspace

    engine = create_db_engine(settings.database_url)
    try:
        pending = [d for d in deploy_workspace(engine, ws, dry_run=True) if d.changed]
    except Exception as exc:  # a database not migrated yet: the API's own check will tell
        log.debug("cannot compare the workspace with deployed campaigns: %s", exc)
        return
    finally:
        engine.dispose()
    for d in pending:
        live = f"{d.old_version} ({d.old_status})" if d.old_version else "nothing"
        err.print(
            f"[yellow]campaign {escape(d.campaign_id)}: the workspace has {d.new_version} "
            f"({d.new_status}) but {live} is live; run `drip campaigns deploy`[/yellow]",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def worker(workspace: WorkspaceOption = None) -> None:
    """Run the journey worker against the configured Temporal (the production shape).

    Migrates the database first, so a fresh deployment needs no separate step. Metrics:
    DRIP_WORKER_METRICS_PORT and DRIP_WORKER_TEMPORAL_METRICS_PORT (off by default).
    """
    from workflows.client import TemporalUnavailable
    from workflows.metrics import MetricsUnavailable
    from workflows.worker import run_worker

    settings = _settings(workspace=workspace)
    _structured_logs(settings)
    # its start and stop lines, whatever the level: a worker that says nothing looks dead
    logging.getLogger("workflows.worker").setLevel(logging.INFO)
    _check_dkim(settings)
    warn_at_start(settings, err, "drip worker")  # once per start, never per send
    ws = _workspace(settings)
    _migrate(settings)
    _warn_if_undeployed(settings, ws)
    try:
        run_with_temporal(_until_stopped(run_worker(settings, ws)))
    except KeyboardInterrupt:
        pass
    except (TemporalUnavailable, MetricsUnavailable) as exc:  # a setting or an outage
        _fail(str(exc))
    except Exception as exc:
        log.exception("the worker stopped")
        _fail(f"the worker stopped: {type(exc).__name__}: {exc}")


class HttpServer(StrEnum):
    granian = "granian"
    uvicorn = "uvicorn"


#: granian's own loggers when the logs are JSON: no handlers of their own, so their lines reach
#: webhooks.logs' handler on the root logger; its access log stays off (drip.access replaces it)
_GRANIAN_JSON_LOGGING: dict[str, Any] = {
    "loggers": {
        "_granian": {"handlers": [], "level": "INFO", "propagate": True},
        "granian.access": {"handlers": [], "level": "INFO", "propagate": True},
    },
}


@app.command()
def api(
    workspace: WorkspaceOption = None,
    host: Annotated[str | None, typer.Option(help="[default: DRIP_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="[default: DRIP_API_PORT]")] = None,
    server: Annotated[
        HttpServer, typer.Option(help="granian (production) or uvicorn (single process)")
    ] = HttpServer.granian,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes (granian), each with its own hit writer")
    ] = 1,
) -> None:
    """Serve the API (forms, tracking, unsubscribe, events) alone: the production shape.

    Migrates the database first, so a fresh deployment needs no separate step. SIGTERM or
    SIGINT stops it gracefully: the buffered tracking hits are stored before it exits.
    """
    settings = _settings(workspace=workspace, api_host=host, api_port=port)
    json_logs = _structured_logs(settings)
    ws = _workspace(settings)
    if server is HttpServer.uvicorn and workers != 1:
        _fail("--workers needs --server granian (uvicorn serves the API in one process here)")
    _migrate(settings)
    _warn_if_undeployed(settings, ws)
    # several workers add up their /metrics counts in a shared directory
    with shared_metrics(workers if server is HttpServer.granian else 1):
        if server is HttpServer.granian:
            _serve_granian(settings, workers=workers, json_logs=json_logs)
        else:
            _serve_uvicorn(settings, ws, json_logs=json_logs)


def _serve_granian(settings: Settings, *, workers: int, json_logs: bool) -> None:
    """granian's worker processes build the app from ``webhooks.asgi:create_app`` and run its
    lifespan; granian handles SIGINT/SIGTERM itself (the main process stops the workers, each
    one finishes its lifespan: hits stored)."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    # the workers read the settings from the environment: hand them this command's overrides
    os.environ["DRIP_WORKSPACE"] = str(settings.workspace)
    os.environ["DRIP_API_HOST"] = settings.api_host
    os.environ["DRIP_API_PORT"] = str(settings.api_port)
    os.environ["DRIP_LOG_FORMAT"] = _log_format(settings)
    settings.secret()  # a dev key is generated here once, not raced by the workers
    server = Server(
        "webhooks.asgi:create_app",
        factory=True,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.ASGI,  # ASGI with lifespan (ASGINL would skip it)
        workers=workers,
        websockets=False,
        log_level=LogLevels.info,
        log_dictconfig=_GRANIAN_JSON_LOGGING if json_logs else None,
        log_access=not json_logs,
        workers_kill_timeout=30,  # a worker stuck in its shutdown is killed after this
    )
    where = f"{settings.api_host}:{settings.api_port}"
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError) as exc:  # binding: "Address already in use" from granian's Rust
        _fail(f"the API could not start on {where} ({str(exc).splitlines()[0]})")
    except SystemExit as exc:  # granian's exit after a worker failed (logged above)
        if exc.code not in (None, 0):
            _fail(f"the API stopped: a worker process failed on {where} (see the log above)")


def _serve_uvicorn(settings: Settings, ws: Workspace, *, json_logs: bool) -> None:
    from webhooks.main import create_app

    server = ApiServer(
        uvicorn.Config(
            create_app(settings, ws),
            host=settings.api_host,
            port=settings.api_port,
            log_level="info",
            # JSON: uvicorn's loggers go to our handler, and drip.access replaces its access log
            log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
            access_log=not json_logs,
        )
    )

    def stop() -> None:
        server.should_exit = True

    def force() -> None:
        server.force_exit = True

    async def serve() -> None:
        with stop_on_signals(stop, force):
            await server.serve()

    try:
        run_with_temporal(serve())
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn's way of saying it could not start (logged above)
        _fail(f"the API could not start on {settings.api_host}:{settings.api_port} ({exc})")


@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Option(help="Alembic revision to upgrade to")] = "head",
) -> None:
    """Bring the contact database's schema to the latest version (safe to repeat)."""
    settings = _settings()
    _migrate(settings, revision)
    url = make_url(settings.database_url).render_as_string(hide_password=True)
    console.print(f"[green]database at {escape(revision)}[/green]: {escape(url)}", highlight=False)


@db_app.command("check")
def check_values(
    repair: Annotated[
        bool, typer.Option("--repair", help="fix what is found (see above), then report it")
    ] = False,
) -> None:
    """Find stored values that break queries or disguise text (written by older versions):
    non-finite numbers, control characters, lone surrogates, bidirectional controls, Unicode
    domains. With --repair: numbers -> null, characters removed, surrogates -> U+FFFD, domains
    -> punycode. Exit 1 when problems remain. It does not migrate first (``drip db upgrade``
    repairs as it migrates): it reads the database as it is."""
    from contacts import integrity

    settings = _settings()
    engine = create_db_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            findings = integrity.check(connection, repair=repair)
    finally:
        engine.dispose()
    for finding in findings:
        console.print(escape(str(finding)), highlight=False, soft_wrap=True)
    left = [f for f in findings if not f.repaired]
    fixed = len(findings) - len(left)
    if fixed:
        console.print(f"[green]{fixed} problem(s) repaired[/green]", highlight=False)
    if left:
        hint = "" if repair else ": run drip db check --repair"
        _fail(f"{len(left)} problem(s) in stored values{hint}")
    if not findings:
        console.print("[green]no problems in stored values[/green]", highlight=False)


@db_app.command()
def rollups(
    check: Annotated[
        bool, typer.Option("--check", help="change nothing; exit 1 if the rollups differ")
    ] = False,
) -> None:
    """Recount the campaign rollups (unique openers and clickers, machine hits) from the events
    and hits, and store the recount; with --check, only say where they differ."""
    from contacts import rollups as campaign_rollups
    from contacts.db import session_scope

    settings = _settings()
    _migrate(settings)
    engine = create_db_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            diff = campaign_rollups.compare(session)
            if check:
                for key, stored, counted in diff.rows():
                    console.print(
                        f"{escape(' / '.join(k or '(campaign)' for k in key))}: "
                        f"stored {stored}, recounted {counted}",
                        highlight=False,
                    )
                if not diff.same:
                    _fail("the campaign rollups differ from a recount: run drip db rollups")
                console.print("[green]the campaign rollups equal a recount[/green]")
                return
            campaign_rollups.rebuild(session)
    finally:
        engine.dispose()
    changed = len(diff.reach) + len(diff.bots)
    console.print(f"[green]campaign rollups recounted[/green]: {changed} figure(s) changed")
