"""``drip webhooks``: outgoing event webhook endpoints, their deliveries, resends.

The same endpoints as ``/api/webhooks`` and the workspace's ``webhooks:``; what is added here
has the source ``cli`` (a deploy leaves it alone). A secret is printed once, by ``add`` and
``rotate``. ``resend`` queues a delivery again through Temporal. Exit codes: 0 done, 1 refused
(the reason is printed), 2 a wrong option.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts import webhook_endpoints as we
from contacts.db import create_db_engine, migrate, migrated_engine, session_scope
from contacts.errors import InvalidValue, NotFound
from contacts.models import utcnow
from drip._runtime import run_with_temporal
from drip.settings import get_settings
from workflows.client import TemporalUnavailable, connect
from workflows.webhooks_out import resend_delivery

app = typer.Typer(
    help="Outgoing event webhooks: endpoints, deliveries, resends.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _engine() -> AbstractContextManager[Engine]:
    return migrated_engine(get_settings().database_url)


def _say(to: Console, message: str) -> None:
    to.print(escape(message), highlight=False, soft_wrap=True)


def _refuse(message: str) -> typer.Exit:
    _say(err, f"refused: {message}")
    return typer.Exit(1)


@app.command("list")
def list_() -> None:
    """Every endpoint: name, URL, event types, state and where it was registered."""
    with _engine() as engine, session_scope(engine) as s:
        rows = s.exec(select(we.WebhookEndpoint).order_by(col(we.WebhookEndpoint.id))).all()
        cells = [
            (
                str(r.id),
                r.name,
                r.url,
                ", ".join(r.event_types),
                "enabled" if r.enabled else f"disabled: {r.disabled_reason or 'by hand'}",
                r.source,
            )
            for r in rows
        ]
    if not cells:
        _say(console, "no webhook endpoints")
        return
    table = Table("id", "name", Column("url", overflow="fold"), "events", "state", "source")
    for row in cells:
        table.add_row(*(escape(c) for c in row))
    console.print(table)


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="a unique name")],
    url: Annotated[str, typer.Argument(help="the receiver's https:// URL")],
    owner: Annotated[str, typer.Option(help="who is emailed if the endpoint is disabled")],
    event: Annotated[
        list[str], typer.Option(help="an event type (repeat the option), or '*' for all")
    ],
    filter_: Annotated[
        str | None, typer.Option("--filter", help="a condition on the event's properties")
    ] = None,
) -> None:
    """Register an endpoint; prints its signing secret (shown only now)."""
    with _engine() as engine:
        try:
            with session_scope(engine) as s:
                row = we.create_endpoint(
                    s,
                    name=name,
                    url=url,
                    event_types=event,
                    owner_email=owner,
                    filter=filter_,
                    source="cli",
                )
                endpoint_id, secret = row.id, row.secret
        except (InvalidValue, we.EndpointExists) as exc:
            raise _refuse(str(exc)) from None
    _say(console, f"added webhook endpoint {endpoint_id} ({name})")
    _say(console, f"signing secret (shown only now): {secret}")


@app.command()
def remove(endpoint_id: Annotated[int, typer.Argument(help="the endpoint's id")]) -> None:
    """Remove an endpoint with its deliveries."""
    with _engine() as engine:
        try:
            with session_scope(engine) as s:
                we.delete_endpoint(s, we.get_endpoint(s, endpoint_id))
        except NotFound as exc:
            raise _refuse(f"no {exc}") from None
    _say(console, f"removed webhook endpoint {endpoint_id}")


@app.command()
def rotate(endpoint_id: Annotated[int, typer.Argument(help="the endpoint's id")]) -> None:
    """A new signing secret; the old one keeps signing beside it for 24 hours."""
    with _engine() as engine:
        try:
            with session_scope(engine) as s:
                secret = we.rotate_secret(s, we.get_endpoint(s, endpoint_id), now=utcnow())
        except NotFound as exc:
            raise _refuse(f"no {exc}") from None
    _say(console, f"new signing secret of endpoint {endpoint_id} (shown only now): {secret}")
    _say(console, "the previous secret signs beside it for 24 hours")


@app.command()
def deliveries(
    endpoint_id: Annotated[int | None, typer.Option("--endpoint", help="one endpoint")] = None,
    state: Annotated[we.DeliveryState | None, typer.Option(help="one state")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """The newest deliveries: event, endpoint, state, attempts, last answer."""
    with _engine() as engine, session_scope(engine) as s:
        rows = we.deliveries(
            s, endpoint_id=endpoint_id, state=state.value if state else None, limit=limit
        )
        cells = [
            (
                str(d.id),
                str(d.endpoint_id),
                d.event_type,
                d.event_id,
                d.state,
                str(d.attempts),
                d.last_error or (str(d.last_status) if d.last_status else ""),
            )
            for d in rows
        ]
    if not cells:
        _say(console, "no deliveries")
        return
    table = Table(
        "id", "endpoint", "event", "event id", "state", "attempts", Column("last", overflow="fold")
    )
    for row in cells:
        table.add_row(*(escape(c) for c in row))
    console.print(table)


@app.command()
def resend(delivery_id: Annotated[int, typer.Argument(help="the delivery's id")]) -> None:
    """Deliver again, with the same webhook-id (receivers can tell it is a repeat)."""
    settings = get_settings()
    engine = create_db_engine(settings.database_url)

    async def run() -> None:
        client = await asyncio.wait_for(connect(settings), timeout=10)
        await resend_delivery(client, engine, settings.temporal_task_queue, delivery_id)

    try:
        migrate(engine)
        with session_scope(engine) as s:
            if s.get(we.WebhookDelivery, delivery_id) is None:
                raise LookupError(delivery_id)
        run_with_temporal(run())
    except LookupError:
        raise _refuse(f"no webhook delivery {delivery_id}") from None
    except (TemporalUnavailable, TimeoutError) as exc:
        raise _refuse(f"Temporal cannot be reached ({exc})") from None
    finally:
        engine.dispose()
    _say(console, f"delivery {delivery_id} queued again")
