"""Helpers of the admin API tests: API keys made the way `drip apikeys create` makes them."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from contacts import apikeys
from contacts.db import session_scope

ALL_SCOPES = tuple(apikeys.SCOPES)


def make_key(engine: Engine, *scopes: str, name: str = "test") -> dict[str, str]:
    """Headers carrying a new key with ``scopes`` (every scope when none are given)."""
    with session_scope(engine) as session:
        _, key = apikeys.create_key(session, name, scopes or ALL_SCOPES)
    return {"Authorization": f"Bearer {key}"}
