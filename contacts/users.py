"""Dashboard users and their sessions: made from the CLI, passwords hashed with argon2id.

Passwords are people's, so they are guessable: unlike API keys (random, long, a plain SHA-256
is enough), they get a slow, salted, memory-hard hash. ``verify_password`` spends the same time
for an unknown address as for a wrong password, so the login form does not tell which
addresses have accounts.

A session is a random token in a cookie; the table keeps only its SHA-256 (``session_id``), and
a CSRF token that the session's forms must send back. Sessions end at ``expires_at`` (12 hours
after sign-in), on sign-out, when the user is disabled, and when their password changes (all but
the browser that changed it): someone who stole a session or the old password must not stay in.

One set of password rules (``check_password_rules``) serves every way a password is set: the
CLI's ``create`` and ``password``, and the dashboard's account page.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from contacts.errors import ContactError, NotFound
from contacts.models import DashboardSession, Role, User, utcnow

__all__ = [
    "SESSION_LIFETIME",
    "InvalidUser",
    "SignedIn",
    "authenticate",
    "check_password_rules",
    "create_user",
    "disable_user",
    "enable_user",
    "end_session",
    "find_user",
    "list_users",
    "load_session",
    "password_matches",
    "session_id",
    "set_password",
    "start_session",
]

SESSION_LIFETIME = timedelta(hours=12)
#: shortest password accepted; long passphrases are welcome (argon2 takes any length)
MIN_PASSWORD_LENGTH = 10
#: longest password accepted: the sign-in form takes no more, so a longer one could never be used
MAX_PASSWORD_LENGTH = 1000

_hasher = PasswordHasher()
#: verified against when the address is unknown, so that answer takes as long as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class InvalidUser(ContactError, ValueError):
    """A user that cannot be made: a taken address, an unknown role, a short password."""


@dataclass(frozen=True)
class SignedIn:
    """Who a valid session belongs to, as the dashboard needs it on each request."""

    user_id: int
    email: str
    name: str
    role: Role
    csrf_token: str
    expires_at: datetime


def session_id(token: str) -> str:
    """The table key of a cookie's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _normal(email: str) -> str:
    return email.strip().lower()


def check_password_rules(password: str) -> None:
    """InvalidUser, with a message fit to show the person, for a password drip does not take.
    The only rule is length: a long passphrase beats composition rules (NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUser(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidUser(f"the password can have at most {MAX_PASSWORD_LENGTH} characters")


def create_user(session: Session, email: str, password: str, role: str, *, name: str = "") -> User:
    """Make a user; InvalidUser for a taken address, an unknown role or a password that breaks
    ``check_password_rules``."""
    address = _normal(email)
    if "@" not in address or len(address) > 320:
        raise InvalidUser(f"{email!r} is not an email address")
    try:
        parsed = Role(role)
    except ValueError:
        raise InvalidUser(
            f"unknown role {role!r}; one of: {', '.join(r.value for r in Role)}"
        ) from None
    check_password_rules(password)
    if session.exec(select(User).where(User.email == address)).first() is not None:
        raise InvalidUser(f"a user {address} exists already")
    user = User(email=address, name=name.strip(), password_hash=_hasher.hash(password), role=parsed)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> Sequence[User]:
    return session.exec(select(User).order_by(col(User.email))).all()


def find_user(session: Session, email: str) -> User:
    """The user with this address (any case); NotFound when there is none."""
    user = session.exec(select(User).where(User.email == _normal(email))).first()
    if user is None:
        raise NotFound(f"no user {_normal(email)}")
    return user


def disable_user(session: Session, email: str) -> User:
    """Disable a user and end their sessions at once; NotFound for an unknown address."""
    user = find_user(session, email)
    user.active = False
    session.add(user)
    session.execute(sa.delete(DashboardSession).where(col(DashboardSession.user_id) == user.id))
    session.flush()
    return user


def enable_user(session: Session, email: str) -> User:
    """Let a disabled user sign in again (with their old password: reset it with
    ``set_password`` if it may be known to others); NotFound for an unknown address."""
    user = find_user(session, email)
    user.active = True
    session.add(user)
    session.flush()
    return user


def password_matches(user: User, password: str) -> bool:
    """Whether ``password`` is the user's, checked with argon2 (for proving the current password
    before a change; signing in goes through ``authenticate``, which also records the sign-in).
    Anything longer than any password drip takes is refused without hashing it."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def set_password(
    session: Session,
    email_or_user: str | User,
    new_password: str,
    *,
    keep_session_id: str | None = None,
) -> User:
    """Give a user a new password and end every session of theirs but ``keep_session_id`` (a
    table key, ``session_id(token)``: the browser that made the change stays signed in).

    A password is changed because it leaked or might have: whoever used the old one, or stole a
    session cookie, must be signed out now, not in up to 12 hours. InvalidUser when the password
    breaks ``check_password_rules`` (nothing is changed), NotFound for an unknown address. A
    disabled user stays disabled."""
    check_password_rules(new_password)
    user = find_user(session, email_or_user) if isinstance(email_or_user, str) else email_or_user
    assert user.id is not None
    user.password_hash = _hasher.hash(new_password)
    session.add(user)
    others = sa.delete(DashboardSession).where(col(DashboardSession.user_id) == user.id)
    if keep_session_id is not None:
        others = others.where(col(DashboardSession.id) != keep_session_id)
    session.execute(others)
    session.flush()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this address and password, else None (the same for every cause).
    Rehashes the password when argon2's parameters have grown since it was stored."""
    user = session.exec(select(User).where(User.email == _normal(email))).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    session.add(user)
    session.flush()
    return user


def start_session(session: Session, user: User, *, now: datetime | None = None) -> str:
    """Open a session for ``user``; returns the token for the cookie (shown nowhere else)."""
    assert user.id is not None
    token = secrets.token_urlsafe(32)
    at = now or utcnow()
    session.add(
        DashboardSession(
            id=session_id(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=at,
            expires_at=at + SESSION_LIFETIME,
        )
    )
    # expired rows of anyone are swept here, so the table stays the size of who is signed in
    session.execute(sa.delete(DashboardSession).where(col(DashboardSession.expires_at) < at))
    session.flush()
    return token


def load_session(session: Session, token: str, *, now: datetime | None = None) -> SignedIn | None:
    """The signed-in user of a cookie's token; None when unknown, expired or disabled."""
    if not token or len(token) > 200:
        return None
    row = session.exec(
        select(DashboardSession, User)
        .join(User, col(User.id) == col(DashboardSession.user_id))
        .where(DashboardSession.id == session_id(token))
    ).first()
    if row is None:
        return None
    dash, user = row
    if dash.expires_at <= (now or utcnow()) or not user.active or user.id is None:
        return None
    return SignedIn(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=Role(user.role),
        csrf_token=dash.csrf_token,
        expires_at=dash.expires_at,
    )


def end_session(session: Session, token: str) -> None:
    """Sign out: the cookie's session no longer exists, whatever the browser keeps."""
    gone = sa.delete(DashboardSession).where(col(DashboardSession.id) == session_id(token))
    session.execute(gone)
