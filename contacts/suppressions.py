"""Suppression lists: addresses and whole domains that get no email, whoever's journey or
broadcast it is, each entry with its reason, where it came from (``source``) and when.

An address entry stops that mailbox; a domain entry (``competitor.com``) stops every address at
that domain and at its subdomains (``uk.competitor.com``), because a company's mail lives under
its domain and a marketer who lists it means the whole company. Addresses are compared in the
canonical form every contact is stored in (``contacts.cleaning.normalise_email``: trimmed,
lower-cased, domain as punycode). Gmail's dot and ``+tag`` aliases are *not* folded together
(``contacts.hygiene``'s ``gmail_rules`` are for finding duplicates): an alias is an address its
owner typed on purpose, the major ESPs keep them apart too, and exact matching keeps the check an
index lookup.

Role addresses (``ROLE_LOCAL_PARTS``) reach a function, not a person who subscribed: mail to
``abuse@`` or ``postmaster@`` lands with the people who judge spam complaints, and ``noreply@``
never reads. They get no *marketing* email unless the workspace turns that off
(``suppressions: {role_addresses: false}`` in ``workspace.yaml``); transactional email still
reaches them. Entries on the list stop every email, marketing or not.

Sends check here at send time (``reason_for`` for one journey email, ``reasons_for`` for a
broadcast batch: one query for its thousand addresses and their domains), so an entry added
while a broadcast runs stops the batches not yet started. CSV in and out is
``contacts.suppression_csv``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Field, Session, SQLModel, col, select

from contacts._types import UTCDateTime, utcnow
from contacts.cleaning import normalise_email, text_problem
from contacts.errors import ContactError, InvalidEmail, NotFound
from contacts.hygiene import normalise_email as comparable

__all__ = [
    "DEFAULT_REASON",
    "MAX_REASON",
    "ROLE_LOCAL_PARTS",
    "ROLE_REASON",
    "SUPPRESSED",
    "AudienceTally",
    "InvalidSuppression",
    "Suppression",
    "SuppressionKind",
    "add",
    "each_entry",
    "is_role_address",
    "list_entries",
    "parse_entry",
    "reason_for",
    "reasons_for",
    "remove",
    "tally_audience",
]

#: RFC 2142's mailboxes for running a network and its services (abuse, noc, security,
#: postmaster, hostmaster, usenet, news, webmaster, www, uucp, ftp), and the addresses no one
#: reads: mailer-daemon (the bounce sender) and the no-reply family. RFC 2142's business names
#: (info, marketing, sales, support) are left out: people do sign those up for newsletters.
ROLE_LOCAL_PARTS = frozenset(
    {
        "abuse",
        "noc",
        "security",
        "postmaster",
        "hostmaster",
        "usenet",
        "news",
        "webmaster",
        "www",
        "uucp",
        "ftp",
        "mailer-daemon",
        "noreply",
        "no-reply",
        "donotreply",
        "do-not-reply",
    }
)
#: what an outbox row's reason starts with when a list stopped the email
SUPPRESSED = "suppressed: "
ROLE_REASON = "role address"
#: the reason of an entry added without one (a CSV with an address column only)
DEFAULT_REASON = "on the suppression list"
MAX_REASON = 200
MAX_SOURCE = 100
#: addresses per query of ``reasons_for`` (each brings its domains): well under SQLite's 32,766
#: bound parameters, and a broadcast batch (1,000) in one
CHUNK = 5000


class SuppressionKind(StrEnum):
    address = "address"
    domain = "domain"


class Suppression(SQLModel, table=True):
    """One address or domain that gets no email."""

    __tablename__ = "suppressions"

    id: int | None = Field(default=None, primary_key=True)
    #: the canonical address, or the domain in punycode, lower-case
    value: str = Field(max_length=320, unique=True, index=True)
    kind: str = Field(max_length=16)
    reason: str = Field(max_length=MAX_REASON)
    #: who added it: ``cli``, ``api``, ``csv import``, ``dashboard``...
    source: str = Field(max_length=MAX_SOURCE)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class InvalidSuppression(ContactError, ValueError):
    """Neither an address nor a domain, or a reason that cannot be stored."""


def parse_entry(text: str) -> tuple[SuppressionKind, str]:
    """What ``text`` names, in the form it is stored and compared in. ``@competitor.com`` is
    read as the domain, the way people write "everyone @ that domain"."""
    raw = (text or "").strip()
    if not raw:
        raise InvalidSuppression("an address or a domain is required")
    if "@" in raw.removeprefix("@"):
        try:
            return SuppressionKind.address, normalise_email(raw)
        except InvalidEmail as exc:
            raise InvalidSuppression(f"{raw}: {exc}") from None
    domain = raw.removeprefix("@")
    try:
        # the domain rules of an address's right-hand side, from the library contacts use
        info = validate_email(f"postmaster@{domain}", check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        message = str(exc).replace("The part after the @-sign", "The domain")
        raise InvalidSuppression(f"{raw} is neither an address nor a domain: {message}") from None
    return SuppressionKind.domain, info.ascii_domain.lower()


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if problem := text_problem(text):
        raise InvalidSuppression(f"the reason {problem}")
    if len(text) > MAX_REASON:
        raise InvalidSuppression(f"the reason is over {MAX_REASON} characters")
    return text or DEFAULT_REASON


def add(session: Session, entry: str, reason: str | None, source: str) -> tuple[Suppression, bool]:
    """Suppress ``entry``: the row, and whether it is new. Adding an entry already listed
    replaces its reason and source (the latest word wins) and keeps when it was first added."""
    kind, value = parse_entry(entry)
    why = _reason(reason)
    row = session.exec(select(Suppression).where(Suppression.value == value)).first()
    created = row is None
    if row is None:
        row = Suppression(value=value, kind=kind.value, reason=why, source=source[:MAX_SOURCE])
    else:
        row.reason, row.source = why, source[:MAX_SOURCE]
    session.add(row)
    session.flush()
    return row, created


def remove(session: Session, entry: str) -> Suppression:
    """Take ``entry`` off the list (NotFound if it is not on it); the row as it was."""
    _, value = parse_entry(entry)
    row = session.exec(select(Suppression).where(Suppression.value == value)).first()
    if row is None:
        raise NotFound(f"{value} is not on the suppression list")
    session.delete(row)
    session.flush()
    return row


def list_entries(
    session: Session,
    *,
    kind: SuppressionKind | None = None,
    search: str | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[Suppression]:
    """Entries by id (oldest first), after the id ``after``; ``search`` matches part of the
    address or domain."""
    query = select(Suppression).where(col(Suppression.id) > after).order_by(col(Suppression.id))
    if kind is not None:
        query = query.where(Suppression.kind == kind.value)
    if search:
        query = query.where(
            col(Suppression.value).contains(search.strip().lower(), autoescape=True)
        )
    if limit is not None:
        query = query.limit(limit)
    return list(session.exec(query))


def each_entry(session: Session, page: int = 1000) -> Iterator[Suppression]:
    """Every entry, a page at a time (an export of a long list holds one page)."""
    after = 0
    while rows := list_entries(session, after=after, limit=page):
        yield from rows
        after = rows[-1].id or after


def is_role_address(email: str) -> bool:
    local, at, _ = comparable(email, gmail_rules=False).rpartition("@")
    return bool(at) and local in ROLE_LOCAL_PARTS


def _keys(email: str) -> list[str]:
    """The address, then its domain and each parent domain of two labels or more: the entries
    that would stop it, the most specific first."""
    address = comparable(email, gmail_rules=False)
    _, at, domain = address.rpartition("@")
    if not at:
        return [address]
    labels = domain.split(".")
    return [address, *(".".join(labels[i:]) for i in range(len(labels) - 1))]


def reasons_for(session: Session, emails: Iterable[str], *, roles: bool) -> dict[str, str]:
    """``suppressed: <reason>`` for each of ``emails`` (as given) that gets nothing; the others
    are absent. One query per ``CHUNK`` addresses, for their addresses and domains together.
    ``roles``: role addresses count as suppressed (marketing mail, unless the workspace says
    otherwise)."""
    out: dict[str, str] = {}
    wanted = list(dict.fromkeys(emails))
    for start in range(0, len(wanted), CHUNK):
        keys = {email: _keys(email) for email in wanted[start : start + CHUNK]}
        values = {k for ks in keys.values() for k in ks}
        found: dict[str, str] = dict(
            session.execute(
                sa.select(col(Suppression.value), col(Suppression.reason)).where(
                    col(Suppression.value).in_(values)
                )
            ).all()
        )
        for email, candidates in keys.items():
            listed = next((found[k] for k in candidates if k in found), None)
            if listed is not None:
                out[email] = SUPPRESSED + listed
            elif roles and is_role_address(email):
                out[email] = SUPPRESSED + ROLE_REASON
    return out


def reason_for(session: Session, email: str, *, roles: bool) -> str | None:
    """``suppressed: <reason>`` if ``email`` gets nothing, else None (``reasons_for``)."""
    return reasons_for(session, [email], roles=roles).get(email)


@dataclass
class AudienceTally:
    """What the lists do to an audience: suppressed contacts by reason, and the first
    addresses (by contact id) that would still be sent to."""

    by_reason: Counter[str]
    sample: list[str]


def tally_audience(
    session: Session,
    where: sa.ColumnElement[bool],
    *,
    roles: bool,
    sample: int = 0,
    page: int = 5000,
) -> AudienceTally:
    """Run the contacts matching ``where`` through ``reasons_for``, a page of contacts at a time
    (a broadcast's dry run: the very check the batches make, so the count cannot drift from
    what a send does)."""
    contacts = SQLModel.metadata.tables["contacts"]
    tally = AudienceTally(Counter(), [])
    after = 0
    while True:
        rows = session.execute(
            sa.select(contacts.c.id, contacts.c.email)
            .where(where, contacts.c.id > after)
            .order_by(contacts.c.id)
            .limit(page)
        ).all()
        if not rows:
            return tally
        reasons = reasons_for(session, [str(r.email) for r in rows], roles=roles)
        tally.by_reason.update(reasons[str(r.email)] for r in rows if str(r.email) in reasons)
        room = sample - len(tally.sample)
        if room > 0:
            tally.sample += [str(r.email) for r in rows if str(r.email) not in reasons][:room]
        after = int(rows[-1].id)
