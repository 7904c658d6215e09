"""Signature tokens of ESP webhooks already used, so each signed request is honoured once.

Mailgun signs only ``timestamp + token``, not the body: a captured signed request can be
reposted within the freshness window with the same signature and *other* event data, and its
signature still verifies. Mailgun's answer is that receivers remember the tokens they have seen.
They are remembered here, in the database, so that every API process refuses a token any of
them has already accepted (``claim_token`` inserts under a unique key: the database decides,
never a read-then-write). A token only needs keeping while a request carrying it could still
pass the freshness check: ``prune_tokens`` drops those whose *signed* time is older than the
window (a request signed then is refused as stale whoever remembers it).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col

from contacts._sql import insert_ignore
from contacts._types import UTCDateTime, utcnow

__all__ = ["MAX_TOKEN_LENGTH", "WebhookToken", "claim_token", "prune_tokens"]

#: Longest token kept as sent; a longer one is kept as its SHA-256 (one key per token still).
MAX_TOKEN_LENGTH = 100


class WebhookToken(SQLModel, table=True):
    """One signature token an ESP webhook request was accepted with."""

    __tablename__ = "webhook_tokens"

    provider: str = Field(primary_key=True, max_length=20)
    token: str = Field(primary_key=True, max_length=MAX_TOKEN_LENGTH)
    #: the time the signature carries: what decides when the token can be forgotten
    signed_at: datetime = Field(sa_type=UTCDateTime, index=True)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def _key(token: str) -> str:
    if len(token) <= MAX_TOKEN_LENGTH:
        return token
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def claim_token(session: Session, provider: str, token: str, signed_at: datetime) -> bool:
    """Remember ``token``; False if it was remembered already (the request is a replay)."""
    values = {
        "provider": provider,
        "token": _key(token),
        "signed_at": signed_at,
        "received_at": utcnow(),
    }
    return insert_ignore(session, WebhookToken, values, ["provider", "token"])


def prune_tokens(session: Session, signed_before: datetime) -> int:
    """Forget tokens signed before ``signed_before``; the number forgotten."""
    result = session.execute(
        sa.delete(WebhookToken).where(col(WebhookToken.signed_at) < signed_before)
    )
    return int(getattr(result, "rowcount", 0) or 0)
