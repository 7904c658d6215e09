"""API keys for the admin API: made once, stored hashed, checked in constant time, revocable.

A key reads ``drip_<43 url-safe characters>`` (256 bits from ``secrets``). It is shown once, when
made; the database keeps its SHA-256 and its first characters (``prefix``, for listings). A
plain hash is enough here, unlike for passwords: the key is random and long, so there is nothing
to guess, and it does not depend on ``DRIP_SECRET_KEY`` (rotating the secret keeps keys valid).

Scopes say what a key may do (``SCOPES``); a route asks for one, and a key without it is
refused (403), while a missing, unknown or revoked key is not authenticated at all (401).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlmodel import Session, col, select

from contacts.errors import ContactError, NotFound
from contacts.models import ApiKey, utcnow

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "InvalidScope",
    "create_key",
    "hash_key",
    "list_keys",
    "revoke_key",
    "verify_key",
]

KEY_PREFIX = "drip_"
#: characters of the key kept in clear to tell keys apart ("drip_" and 8 more)
SHOWN_CHARACTERS = 13
#: last_used_at is written at most this often per key, so a busy key costs no write per request
LAST_USED_RESOLUTION = timedelta(minutes=1)

#: every scope a key can hold, and what it allows
SCOPES: dict[str, str] = {
    "contacts:read": "search, read and export contacts",
    "contacts:write": "create, update and import contacts",
    "contacts:erase": "erase a contact's personal data (GDPR)",
    "events:read": "read a contact's events",
    "campaigns:read": "list deployed campaigns and their figures",
    "journeys:read": "list journeys (enrolments)",
    "journeys:write": "cancel a running journey",
    "messages:read": "list emails interrupted mid-send",
    "messages:resend": "resend an interrupted email (its recipient may get it twice)",
    "broadcasts:read": "list broadcasts and their sends' progress and figures",
    "broadcasts:send": "dry-run, send, pause, resume and cancel broadcasts",
    "suppressions:read": "list and export the suppression list",
    "suppressions:write": "add, remove and import suppressed addresses and domains",
    "sales:read": "list sales teams and reps",
    "sales:write": "manage sales teams and reps; set a contact's owner and stage",
    "webhooks:read": "list outgoing webhook endpoints and their deliveries",
    "webhooks:write": "register, change, remove outgoing webhook endpoints; rotate secrets; resend",
    "send": "send transactional email (POST /api/messages) and read those emails' state",
}


class InvalidScope(ContactError, ValueError):
    """A scope that does not exist; the message lists those that do."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise InvalidScope(
            f"unknown scope {', '.join(map(repr, unknown))}; scopes are {', '.join(SCOPES)}"
        )
    if not wanted:
        raise InvalidScope(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return wanted


def create_key(session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key named ``name`` with ``scopes``: the stored row and the key itself, which is
    never stored and cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("a key needs a name of 1 to 200 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        prefix=key[:SHOWN_CHARACTERS],
        key_hash=hash_key(key),
        scopes=_check_scopes(scopes),
    )
    session.add(row)
    session.flush()
    return row, key


def verify_key(session: Session, key: str) -> ApiKey | None:
    """The live key row for ``key``, or None (malformed, unknown or revoked); records its use."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_key(key)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    # the lookup is by a hash of a random secret, so its timing leaks nothing useful; the
    # comparison is constant-time anyway, should an index ever be replaced by a scan
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        session.flush()
    return row


def list_keys(session: Session, *, include_revoked: bool = False) -> Sequence[ApiKey]:
    stmt = select(ApiKey).order_by(col(ApiKey.id))
    if not include_revoked:
        stmt = stmt.where(col(ApiKey.revoked_at).is_(None))
    return session.exec(stmt).all()


def revoke_key(session: Session, ref: str | int) -> ApiKey:
    """Revoke a key by id or by its prefix (as listed); revoking twice is harmless.
    NotFound when nothing matches, ValueError when a prefix matches several keys."""
    if isinstance(ref, int) or ref.isdigit():
        rows = [r for r in [session.get(ApiKey, int(ref))] if r is not None]
    else:
        rows = list(
            session.exec(select(ApiKey).where(col(ApiKey.prefix).startswith(ref, autoescape=True)))
        )
    if not rows:
        raise NotFound(f"no API key {ref!r}")
    if len(rows) > 1:
        raise ValueError(f"{ref!r} matches {len(rows)} keys; give the id")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.flush()
    return row
