"""Pacing by receiving domain for the SMTP transport, with its state in the database.

``SmtpTransport`` asks the ``DomainPacer`` before every message (``enter``): the recipient's
group (``campaigns.deliverability``) books its next send slot in ``contacts.pacing``, shared by
every worker process, and the send sleeps until it. Right before the transaction it leases
one of the group's transaction slots (``lease``) and gives it back after (``leave``). A
deferral from the relay (``421 4.7.0``, ``454``) is reported with ``deferred``: the group backs
off, and every send to it meanwhile raises ``DomainDeferred`` with the time to try again,
without touching the relay. Mail to other groups goes on at its own pace.

A group without limits and outside a warm-up books nothing: its sends only check, from a copy
of the groups' waits refreshed at most once a second, that it is not backing off. So the
common case costs no database round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.deliverability import Deliverability, DomainLimit
from contacts import pacing
from emails.errors import DomainDeferred, TransientSendError

__all__ = ["DomainPacer", "Ticket"]

log = logging.getLogger(__name__)

#: How often a send waiting for a transaction slot asks the database again.
_SLOT_POLL_SECONDS = 0.02
#: How stale the copy of the groups' waits may be for groups that book nothing.
_REFRESH_SECONDS = 1.0


@dataclass
class Ticket:
    """One send's place in its group: the transaction slot it holds, if any."""

    group: str
    #: the caller's clock at the start (unix time): a deferral's wait counts from it
    clock: float = 0.0
    slot: int | None = None


class DomainPacer:
    """Books sends per group of receiving domains; one per worker process, shared by its
    sends (the transport's)."""

    def __init__(
        self,
        engine: Engine,
        deliverability: Deliverability,
        *,
        zone: ZoneInfo,
        lease_seconds: float = 300.0,
    ) -> None:
        self.engine = engine
        self.rules = deliverability.groups()
        self.backoff = deliverability.backoff
        self.warmup = deliverability.warmup
        self.zone = zone
        self.lease_seconds = lease_seconds
        self._by_domain = {d: name for name, rule in self.rules.items() for d in rule.domains}
        #: who holds a lease: this process, so a lease of a dead worker is recognisable
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: group -> (deferred_until, factor, recover_from), read at most once a second
        self._waits: dict[str, tuple[float, float, float]] = {}
        self._waits_read = 0.0
        #: a process never holds more slots of a group than it may: its own sends queue here
        self._local: dict[str, asyncio.Semaphore] = {}

    def group_of(self, address: str) -> str:
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        return self._by_domain.get(domain, "default")

    def books(self, address: str) -> bool:
        """Whether sends to ``address`` book a slot (a rate limit or a warm-up applies): the
        caller may then want to wait for them beside its other sends, not in line."""
        group = self.group_of(address)
        rule = self.rules[group]
        return rule.per_second > 0 or self.warmup is not None or self._recovering(group)

    def _recovering(self, group: str, clock: float | None = None) -> bool:
        """Whether a group without a rate limit is climbing back after a deferral (then it is
        paced for a while), from the copy of the groups' state."""
        state = self._waits.get(group)
        if state is None:
            return False
        _, factor, recover_from = state
        limits = self.limits(group)
        pace = pacing.pace_factor(factor, recover_from, limits, clock or time.time())
        return pace < 1.0

    def limits(self, group: str, when: datetime | None = None) -> pacing.Limits:
        """The group's limits, with the warm-up's cap for the day ``when`` falls on (in the
        workspace's time zone; now when None)."""
        rule = self.rules.get(group, DomainLimit())
        day = cap = None
        ends = 0.0
        if self.warmup is not None:
            local = (when or datetime.now(UTC)).astimezone(self.zone)
            cap = self.warmup.cap(local.date())
            if cap is not None:
                day = local.date().isoformat()
                midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
                ends = midnight.replace(tzinfo=self.zone).timestamp()
        return pacing.Limits(
            per_second=rule.per_second,
            connections=rule.connections,
            backoff_first=self.backoff.first.total_seconds(),
            backoff_max=self.backoff.max.total_seconds(),
            recover=self.backoff.recover.total_seconds(),
            slowest=self.backoff.slowest,
            resume_per_second=self.backoff.resume_per_second,
            day=day,
            day_cap=cap,
            day_ends=ends,
        )

    async def enter(
        self, recipient: str, *, when: datetime | None, horizon: float, stop: asyncio.Event
    ) -> Ticket:
        """Wait for the recipient's group to take this send: its booked slot, no further than
        ``horizon`` seconds away; ``DomainDeferred`` when there is none that soon, the group is
        backing off or has had its warm-up's cap today. Returns early if ``stop`` is set (the
        caller checks it)."""
        group = self.group_of(recipient)
        limits = self.limits(group, when)
        clock = when.timestamp() if when is not None else time.time()
        if limits.per_second <= 0 and limits.day_cap is None:
            await self._check_waiting(group, clock)
            if not self._recovering(group, clock):
                return Ticket(group, clock)
        booking = await asyncio.to_thread(self._book, group, limits, horizon, clock)
        if booking.at is None:
            assert booking.retry_at is not None
            raise _deferred(booking.reason, booking.retry_at, group)
        left = booking.at - time.time()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), left)
            # a deferral may have come meanwhile (seen here at once, from another worker
            # within a second): the sends booked before it do not all go and get refused
            await self._check_waiting(group, clock + left)
        return Ticket(group, clock)

    def _book(
        self, group: str, limits: pacing.Limits, horizon: float, clock: float
    ) -> pacing.Booking:
        with self.engine.begin() as conn:
            return pacing.book(conn, group, limits, now=time.time(), horizon=horizon, clock=clock)

    async def lease(self, ticket: Ticket, stop: asyncio.Event) -> bool:
        """Take one of the group's transaction slots (across all workers) for this send;
        False, holding none, if ``stop`` is set first."""
        connections = self.rules.get(ticket.group, DomainLimit()).connections
        if connections <= 0:
            return True
        local = self._local.setdefault(ticket.group, asyncio.Semaphore(connections))
        await local.acquire()
        try:
            while not stop.is_set():
                got = await asyncio.to_thread(self._take, ticket.group, connections)
                if isinstance(got, int):
                    ticket.slot = got
                    return True
                wait = min(max(got - time.time(), 0.0), _SLOT_POLL_SECONDS) or _SLOT_POLL_SECONDS
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            return False
        finally:
            if ticket.slot is None:
                local.release()

    def _take(self, group: str, connections: int) -> int | float:
        with self.engine.begin() as conn:
            return pacing.take_slot(
                conn,
                group,
                connections,
                holder=self.holder,
                now=time.time(),
                lease=self.lease_seconds,
            )

    async def leave(self, ticket: Ticket) -> None:
        """Give the transaction slot back (whatever became of the send)."""
        if ticket.slot is None:
            return
        slot, ticket.slot = ticket.slot, None
        self._local[ticket.group].release()

        def work() -> None:
            with self.engine.begin() as conn:
                pacing.release(conn, ticket.group, slot, holder=self.holder)

        try:
            await asyncio.shield(asyncio.to_thread(work))
        except Exception:  # the lease runs out on its own; the message's fate is decided
            log.warning("cannot give back %s's transaction slot %d", ticket.group, slot)

    async def deferred(self, ticket: Ticket, exc: TransientSendError) -> DomainDeferred:
        """The relay deferred this send: back the group off and say until when."""
        limits = self.limits(ticket.group)

        def work() -> float:
            with self.engine.begin() as conn:
                return pacing.record_deferral(
                    conn, ticket.group, limits, now=ticket.clock, reply=str(exc)
                )

        until = await asyncio.to_thread(work)
        self._waits_read = 0.0  # read the group's new state on the next send
        return _deferred(f"{ticket.group} deferred our mail ({exc})", until, ticket.group, exc.code)

    async def _check_waiting(self, group: str, clock: float) -> None:
        now = time.time()
        if now - self._waits_read > _REFRESH_SECONDS:
            self._waits = await asyncio.to_thread(self._read_waits)
            self._waits_read = now
        until = self._waits.get(group, (0.0, 1.0, 0.0))[0]
        if until > clock:
            raise _deferred(f"{group} deferred our mail: backing off", until, group)

    def _read_waits(self) -> dict[str, tuple[float, float, float]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(  # type: ignore[call-overload]
                    pacing.DomainPace.domain_group,
                    pacing.DomainPace.deferred_until,
                    pacing.DomainPace.factor,
                    pacing.DomainPace.recover_from,
                )
            ).all()
        return {g: (float(until), float(f), float(r)) for g, until, f, r in rows}


def _deferred(reason: str, until: float, group: str, code: int | None = None) -> DomainDeferred:
    return DomainDeferred(
        reason, retry_at=datetime.fromtimestamp(until, UTC), group=group, code=code
    )
