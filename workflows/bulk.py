"""Operations on many journeys at once: enrolling a list of contacts, and pausing, resuming or
cancelling the running journeys of a contact or of a whole campaign.

Enrolment goes the way every enrolment goes: an ``enrol`` event is recorded against the contact,
then routed (``EventRouter``), so audience, re-entry and exit rules apply exactly as for a form
post, and an event that could not be routed (Temporal away) is routed later by the worker's sweep.
The event's dedupe key is (campaign, contact, import id): running the same import again, say
after a crash halfway, records nothing twice and enrols nobody twice. Work is bounded: at most
``concurrency`` contacts are in flight, and targets are read from the iterable as slots free up,
so a million-row import holds a million rows nowhere.

A CSV import has an ``email`` column; every other column becomes a contact field (as text). A bad
row (no or an invalid address, too many values) is reported with its line number and the rest is
imported; a file that cannot work at all (no ``email`` column, a column that is not a field name)
is refused before anything is written.
"""

from __future__ import annotations

import asyncio
import csv
import re
import secrets
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from campaigns.conditions import BUILTIN_FIELDS, ConditionError, parse_condition, to_sql
from campaigns.errors import hint
from campaigns.plan import Plan
from contacts import cleaning, deploys, repository
from contacts.db import session_scope
from contacts.errors import ContactError
from contacts.models import ContactStatus, EnrolmentState, utcnow
from workflows.capabilities import unsupported
from workflows.deploy import plan_of
from workflows.router import EventRouter

__all__ = [
    "BulkError",
    "BulkProgress",
    "BulkResult",
    "CampaignNotLive",
    "Problem",
    "Target",
    "enrol_many",
    "live_campaign",
    "new_import_id",
    "read_csv",
    "select_contacts",
]

_IMPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class BulkError(Exception):
    """A bulk operation that cannot start; the message says why and what to do."""


class CampaignNotLive(BulkError):
    """The campaign is not deployed, not active, or not runnable by this engine."""


@dataclass
class Target:
    """One contact to enrol: by address (created if new, ``fields`` merged in) or by id."""

    email: str = ""
    contact_id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    #: the CSV line it came from, for reports
    line: int | None = None

    @property
    def label(self) -> str:
        return self.email or f"contact {self.contact_id}"


@dataclass
class Problem:
    target: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.target}: {self.reason}" if self.target else f"{where}{self.reason}"


@dataclass
class BulkProgress:
    done: int
    total: int | None
    enrolled: int
    skipped: int
    failed: int


@dataclass
class BulkResult:
    import_id: str
    enrolled: int = 0
    skipped: list[Problem] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)


def new_import_id() -> str:
    """Readable and unique: when the import ran, and a random tail."""
    return f"{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def live_campaign(engine: Engine, campaign_id: str) -> Plan:
    """The plan new enrolments in ``campaign_id`` get; CampaignNotLive saying why there is none."""
    with session_scope(engine) as session:
        current = deploys.current_versions(session)
    row = current.get(campaign_id)
    if row is None:
        known = hint(campaign_id, current, listing="deployed")
        raise CampaignNotLive(
            f"campaign '{campaign_id}' is not deployed{known}; deploy it with "
            "`drip campaigns deploy`"
        )
    if row.status != "active":
        raise CampaignNotLive(
            f"campaign '{campaign_id}' is {row.status} (since {row.deployed_at:%Y-%m-%d %H:%M} "
            "UTC), so nobody can be enrolled; `drip campaigns resume` or a deploy with "
            "`status: active` makes it active"
        )
    plan = plan_of(row)
    if missing := unsupported(plan):
        raise CampaignNotLive(
            f"campaign '{campaign_id}' uses what this engine cannot run yet: {', '.join(missing)}"
        )
    return plan


def read_csv(path: Path) -> tuple[list[Target], list[Problem]]:
    """The targets of a CSV file and the rows that cannot be imported (with line numbers).
    BulkError if the file as a whole cannot work."""
    targets: list[Target] = []
    problems: list[Problem] = []
    line = 1
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:  # Excel writes a BOM
            reader = csv.reader(file)
            header = [h.strip() for h in next(reader, [])]
            _check_header(path, header)
            email_at = [h.lower() for h in header].index("email")
            line = reader.line_num + 1
            for row in reader:
                if any(v.strip() for v in row):  # blank lines are not rows
                    got = _row(header, email_at, row, line)
                    if isinstance(got, Problem):
                        problems.append(got)
                    else:
                        targets.append(got)
                line = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BulkError(f"cannot read {path} (line {line}): {exc}") from None
    return targets, problems


def _check_header(path: Path, header: list[str]) -> None:
    lowered = [h.lower() for h in header]
    if "email" not in lowered:
        shown = ", ".join(header) if any(header) else "none"
        raise BulkError(f"{path} needs an 'email' column in its first line (columns: {shown})")
    reserved = (set(BUILTIN_FIELDS) | {"tags"}) - {"email"}
    for name in header:
        if name.lower() == "email":
            continue
        if not _FIELD_NAME.match(name):
            raise BulkError(
                f"{path}: column {name!r} cannot be a contact field (letters, digits and _, "
                "not starting with a digit); rename it, e.g. "
                f"{re.sub(r'[^A-Za-z0-9_]+', '_', name).strip('_').lower() or 'field'!r}"
            )
        if name in reserved:
            raise BulkError(f"{path}: column {name!r} is built into every contact; rename it")
    if len(set(lowered)) != len(lowered):
        raise BulkError(f"{path}: a column name appears twice")


def _row(header: list[str], email_at: int, row: list[str], line: int) -> Target | Problem:
    if len(row) > len(header):
        return Problem("", f"{len(row)} values but {len(header)} columns", line)
    values = [v.strip() for v in row] + [""] * (len(header) - len(row))
    address = values[email_at]
    if not address:
        return Problem("", "no email address", line)
    try:
        email = repository.normalise_email(address)
    except ContactError as exc:
        return Problem(address, str(exc), line)
    fields = {h: v for i, (h, v) in enumerate(zip(header, values, strict=True)) if i != email_at}
    for name, value in fields.items():
        if reason := cleaning.text_problem(value, multiline=True):
            return Problem(email, f"{name} {reason}", line)
    return Target(email=email, fields={k: v for k, v in fields.items() if v}, line=line)


def select_contacts(engine: Engine, condition: str) -> list[int]:
    """The ids of the subscribed contacts for which ``condition`` holds, evaluated in SQL."""
    contacts = SQLModel.metadata.tables["contacts"]
    try:
        where = to_sql(parse_condition(condition), contacts)
    except ConditionError as exc:
        raise BulkError(f"--where {condition!r}: {exc}") from None
    with session_scope(engine) as session:
        rows = session.execute(
            sa.select(contacts.c.id)
            .where(where, contacts.c.status == ContactStatus.subscribed.value)
            .order_by(contacts.c.id)
        )
        return [int(i) for i in rows.scalars()]


@dataclass
class _Recorded:
    contact_id: int
    event_id: int
    routed: bool
    before: int | None  # the number of the contact's latest enrolment before this one
    running: bool
    status: str


async def enrol_many(
    router: EventRouter,
    campaign_id: str,
    targets: Iterable[Target | str | int],
    *,
    import_id: str | None = None,
    concurrency: int = 20,
    on_progress: Callable[[BulkProgress], None] | None = None,
    source: str = "bulk",
) -> BulkResult:
    """Enrol each target (a Target, an address, or a contact id) into ``campaign_id``.

    Raises CampaignNotLive before touching anything if the campaign cannot enrol anyone; every
    other problem is per contact, in the result's ``failed`` (or ``skipped``, when the campaign's
    rules keep the contact out or it was already handled by this import)."""
    if concurrency < 1:
        raise BulkError("concurrency must be at least 1")
    import_id = import_id or new_import_id()
    if not _IMPORT_ID.match(import_id):
        raise BulkError(
            f"import id {import_id!r}: up to 64 letters, digits, '.', '_', ':' or '-', please"
        )
    plan = await asyncio.to_thread(live_campaign, router.engine, campaign_id)
    total = len(targets) if isinstance(targets, Sized) else None
    result = BulkResult(import_id=import_id)
    limit = asyncio.Semaphore(concurrency)
    seen: dict[int | str, str] = {}
    done = 0

    def record(target: Target) -> _Recorded:
        with session_scope(router.engine) as session:
            if target.contact_id is not None:
                contact = repository.get_contact(session, target.contact_id)
            else:
                contact, _ = repository.upsert_contact(session, target.email, target.fields)
            assert contact.id is not None
            last = repository.latest_enrolment(session, campaign_id, contact.id)
            event, _ = repository.record_event(
                session,
                contact_id=contact.id,
                type="enrol",
                name=campaign_id,
                dedupe_key=f"enrol:{campaign_id}:{contact.id}:{import_id}",
                properties={"import_id": import_id},
                source=f"{source} {import_id}"[:200],
            )
            assert event.id is not None
            return _Recorded(
                contact_id=contact.id,
                event_id=event.id,
                routed=event.routed_at is not None,
                before=last.number if last else None,
                running=last is not None and last.state == EnrolmentState.running,
                status=str(contact.status),
            )

    async def one(target: Target) -> None:
        nonlocal done
        try:
            # claimed before the first await, so the first of two rows naming the same address
            # is the one enrolled, whatever order the database answers in
            key = _key(target)
            if key is not None and key in seen:
                result.skipped.append(Problem(target.label, seen[key], target.line))
                return
            same = f"same contact as {_where(target)}"
            if key is not None:
                seen[key] = same
            got = await asyncio.to_thread(record, target)
            if got.contact_id in seen and key != got.contact_id:  # an address and its id
                result.skipped.append(Problem(target.label, seen[got.contact_id], target.line))
                return
            seen[got.contact_id] = same
            if got.routed:
                why = f"already processed by import {import_id}"
                result.skipped.append(Problem(target.label, why, target.line))
                return
            try:
                enrolled = await router.route(got.event_id)
            except Exception as exc:
                why = f"recorded, but not routed yet (the worker routes it later): {exc}"
                result.failed.append(Problem(target.label, why, target.line))
                return
            if campaign_id in enrolled:
                result.enrolled += 1
            else:
                why = _not_admitted(plan, got)
                result.skipped.append(Problem(target.label, why, target.line))
        except Exception as exc:  # one bad contact must not stop the import
            result.failed.append(Problem(target.label, _reason(exc), target.line))
        finally:
            limit.release()
            done += 1
            if on_progress is not None:
                on_progress(
                    BulkProgress(
                        done=done,
                        total=total,
                        enrolled=result.enrolled,
                        skipped=len(result.skipped),
                        failed=len(result.failed),
                    )
                )

    async with asyncio.TaskGroup() as group:
        for raw in targets:
            await limit.acquire()
            group.create_task(one(_as_target(raw)))
    return result


def _as_target(raw: Target | str | int) -> Target:
    if isinstance(raw, Target):
        return raw
    if isinstance(raw, int):
        return Target(contact_id=raw)
    return Target(email=raw)


def _key(target: Target) -> int | str | None:
    """The contact a target names, as far as can be told without the database (None for an
    invalid address, which fails with its reason when recorded)."""
    if target.contact_id is not None:
        return target.contact_id
    try:
        return repository.normalise_email(target.email)
    except ContactError:
        return None


def _where(target: Target) -> str:
    return f"line {target.line}" if target.line is not None else target.label


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ContactError) else f"{type(exc).__name__}: {exc}"


def _not_admitted(plan: Plan, got: _Recorded) -> str:
    """Why the router enrolled nobody, as far as the facts at hand tell (the router logs the
    exact reason at INFO)."""
    if got.running:
        return "already in the campaign"
    if got.status != ContactStatus.subscribed:
        return f"contact is {got.status}"
    if got.before is not None and plan.reentry == "never":
        return "already went through it (reentry: never)"
    if got.before is not None and plan.reentry == "after":
        return f"went through it less than {timedelta(seconds=plan.reentry_seconds)} ago"
    return "outside the audience, or the goal or an exit rule already holds"
