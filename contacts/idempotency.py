"""``Idempotency-Key``: the first answer to a request, kept so a retry gets it again.

An app that sends a receipt and loses the answer (a timeout, a crash) retries; without a key the
customer gets two receipts. A row is keyed by (API key, idempotency key), so two apps cannot see
each other's keys, and holds a hash of the request (method, path and body) and, once the request
is done, the status and body it was answered with. The row is *claimed* before any work, with
the ids the work will use (the message id), so a retry that arrives while the first request is
still running, or after it crashed half-way, does the same work under the same ids: starting a
message's workflow is idempotent by its id, so the email still goes out once.

A key is kept for ``TTL`` (24 hours, as Stripe keeps them); ``prune`` deletes older rows, and a
claim of an expired key starts afresh.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, delete, select

from contacts._sql import insert_ignore
from contacts._types import UTCDateTime, utcnow

__all__ = [
    "MAX_KEY_CHARS",
    "TTL",
    "Claim",
    "IdempotencyKey",
    "claim",
    "forget",
    "prune",
    "record_answer",
    "request_hash",
]

#: how long a key is remembered
TTL = timedelta(hours=24)
#: Stripe's limit; the header is refused (422) past it
MAX_KEY_CHARS = 255


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    api_key_id: int = Field(primary_key=True, foreign_key="api_keys.id")
    key: str = Field(primary_key=True, max_length=MAX_KEY_CHARS)
    #: SHA-256 of the method, path and body: the same key with another request is a conflict
    request_hash: str = Field(max_length=64)
    #: the ids the work uses, fixed at the claim (``{"message_ids": [...]}``)
    reserved: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    #: the first answer, once there is one
    status: int | None = None
    body: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


@dataclass(frozen=True, slots=True)
class Claim:
    """What a request finds under its key: its own claim (``mine``), or an earlier one."""

    #: the hash of the request that claimed the key first
    request_hash: str
    reserved: dict[str, Any]
    #: the first answer, None while that request has not finished
    status: int | None
    body: dict[str, Any] | None

    def matches(self, request_hash: str) -> bool:
        return self.request_hash == request_hash


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def claim(
    session: Session,
    api_key_id: int,
    key: str,
    digest: str,
    reserved: dict[str, Any],
    *,
    now: datetime | None = None,
) -> Claim:
    """Claim ``key`` for a request with hash ``digest`` and ids ``reserved``, or find the claim
    already there (the caller compares hashes and replays its answer). An expired claim is
    replaced, as if the key had never been used."""
    now = now or utcnow()
    stale = delete(IdempotencyKey).where(
        col(IdempotencyKey.api_key_id) == api_key_id,
        col(IdempotencyKey.key) == key,
        col(IdempotencyKey.created_at) < now - TTL,
    )
    session.exec(stale)
    insert_ignore(
        session,
        IdempotencyKey,
        {
            "api_key_id": api_key_id,
            "key": key,
            "request_hash": digest,
            "reserved": reserved,
            "status": None,
            "body": None,
            "created_at": now,
        },
        ["api_key_id", "key"],
    )
    row = session.exec(
        select(IdempotencyKey).where(
            IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key
        )
    ).one()
    return Claim(row.request_hash, dict(row.reserved), row.status, row.body)


def record_answer(
    session: Session, api_key_id: int, key: str, status: int, body: dict[str, Any]
) -> None:
    """Keep the first answer; a later one (a concurrent twin) never replaces it."""
    row = session.get(IdempotencyKey, (api_key_id, key))
    if row is not None and row.status is None:
        row.status, row.body = status, body
        session.add(row)
        session.flush()


def forget(session: Session, api_key_id: int, key: str) -> None:
    """Drop an unanswered claim whose work failed before doing anything (Temporal was down), so
    the client's retry is tried afresh rather than answered with a conflict."""
    row = session.get(IdempotencyKey, (api_key_id, key))
    if row is not None and row.status is None:
        session.delete(row)
        session.flush()


def prune(session: Session, *, now: datetime | None = None) -> int:
    """Delete the keys older than ``TTL``; how many."""
    cutoff = (now or utcnow()) - TTL
    result = session.exec(delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
