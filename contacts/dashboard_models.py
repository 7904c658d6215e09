"""The dashboard's tables: the people who sign in, and their sessions.

Kept beside ``contacts.models`` (which imports this module, so Alembic sees the tables). A
session row is keyed by the SHA-256 of the cookie's token, never the token itself, so a leaked
database holds no cookie that signs anyone in (the same reasoning as ``api_keys``).
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from contacts._types import UTCDateTime, utcnow

__all__ = ["DashboardSession", "Role", "User"]


class Role(enum.StrEnum):
    #: everything, including the admin pages (users)
    admin = "admin"
    #: campaigns, contacts and analytics; no admin pages
    marketer = "marketer"
    #: their own leads ("my leads")
    sales = "sales"


class User(SQLModel, table=True):
    """Someone who signs in to the dashboard. Disabled users keep their row (``active`` False),
    for the audit trail of who acknowledged what."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    #: stored lower-cased, so one address is one user
    email: str = Field(max_length=320, unique=True, index=True)
    name: str = Field(default="", max_length=200)
    #: an argon2id hash (``contacts.users``)
    password_hash: str = Field(max_length=200)
    role: Role = Field(sa_type=sa.String(16))
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DashboardSession(SQLModel, table=True):
    """A signed-in browser. ``csrf_token`` goes into every form of the session's pages and must
    come back with each POST."""

    __tablename__ = "dashboard_sessions"

    #: the SHA-256 (hex) of the random token in the cookie
    id: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="users.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
