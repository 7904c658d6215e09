"""``drip users``: the people who sign in to the dashboard (``/dashboard``).

Users are made here, not on a sign-up page: a dashboard shows every contact's data, so an
operator decides who gets in. The password is prompted for (or read from stdin, for scripts),
never taken as an argument, which would leave it in the shell history and in ``ps``.

``password`` is the reset for someone who forgot theirs (people change their own on the
dashboard's account page); it signs the user out everywhere, since a reset often follows a leak.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from contacts import users
from contacts.db import create_db_engine, migrate, session_scope
from contacts.errors import NotFound
from contacts.models import Role, User
from drip.settings import get_settings

app = typer.Typer(
    help="Dashboard users (/dashboard): admin, marketer, sales.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _read_password(from_stdin: bool, prompt: str = "Password") -> str:
    """One line of stdin for scripts; else a hidden prompt, typed twice so a typo is caught."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


_PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from stdin's first line")
]


@app.command()
def create(
    email: Annotated[str, typer.Argument(help="the address they sign in with")],
    role: Annotated[Role, typer.Option("--role", "-r", help="what they may see")],
    name: Annotated[str, typer.Option("--name", "-n", help="shown in the dashboard")] = "",
    password_stdin: _PasswordStdin = False,
) -> None:
    """Make a dashboard user (the password is prompted for, or read with --password-stdin)."""
    password = _read_password(password_stdin)
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            user = users.create_user(session, email, password, role.value, name=name)
            shown = f"{user.email} ({user.role})"
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(f"made dashboard user {escape(shown)}", highlight=False)


@app.command("list")
def list_users() -> None:
    """The users: address, name, role, whether active, last sign-in."""
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            rows = [
                (u.email, u.name, str(u.role), u.active, u.last_login_at)
                for u in users.list_users(session)
            ]
    finally:
        engine.dispose()
    if not rows:
        console.print("no dashboard users; make one with `drip users create EMAIL --role admin`")
        return
    table = Table("email", "name", "role", "active", "last sign-in")
    for email, name, role, active, last in rows:
        table.add_row(
            escape(email),
            escape(name),
            role,
            "yes" if active else "no",
            f"{last:%Y-%m-%d %H:%M}" if last else "never",
        )
    console.print(table)


def _switch(email: str, change: Callable[[Session, str], User], done: str) -> None:
    """Apply ``change`` (``users.disable_user`` or ``users.enable_user``) and say so."""
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            shown = change(session, email).email
    except NotFound as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(f"{done} dashboard user {escape(shown)}", highlight=False)


@app.command()
def disable(email: Annotated[str, typer.Argument(help="the user's address")]) -> None:
    """Disable a user: their sessions end now and they cannot sign in again."""
    _switch(email, users.disable_user, "disabled")


@app.command()
def enable(email: Annotated[str, typer.Argument(help="the user's address")]) -> None:
    """Let a disabled user sign in again (with their old password; reset it with `password`)."""
    _switch(email, users.enable_user, "enabled")


@app.command()
def password(
    email: Annotated[str, typer.Argument(help="the user's address")],
    password_stdin: _PasswordStdin = False,
) -> None:
    """Set a user's password (prompted for twice, or read with --password-stdin) and sign them
    out of every browser."""
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        # an unknown address fails before anyone types a password for it
        with session_scope(engine) as session:
            users.find_user(session, email)
        new = _read_password(password_stdin, "New password")
        with session_scope(engine) as session:
            shown = users.set_password(session, email, new).email
    except (NotFound, users.InvalidUser) as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(
        f"changed the password of {escape(shown)}; their sessions have ended", highlight=False
    )
