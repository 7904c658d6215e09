"""The broadcast ledger's turn (``_Ledger._apply``) on SQLite and PostgreSQL: each outbox move a
send makes, as one transaction, with the answers its claims get."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Message, MessageState
from workflows.broadcast_activities import _Ledger

OPS = list[tuple[str, str, str, "asyncio.Future[str] | None"]]


def _rows(engine: Engine, n: int) -> list[str]:
    ids = []
    with session_scope(engine) as s:
        for i in range(n):
            c = Contact(email=f"l{i}@example.com")
            s.add(c)
            s.flush()
            assert c.id is not None
            m = Message(
                id=f"m{i}",
                key=f"broadcast:x:1:{c.id}",
                contact_id=c.id,
                campaign_id="broadcast:x",
                step_id="email",
                workflow_id="broadcast:x:1",
                template="welcome",
                open_token=f"t{i}",
            )
            s.add(m)
            ids.append(m.id)
    return ids


def _states(engine: Engine) -> dict[str, tuple[str, str | None, int]]:
    with session_scope(engine) as s:
        return {m.id: (str(m.state), m.error, m.attempts) for m in s.exec(select(Message))}


def test_a_turn_claims_records_outcomes_and_says_why_a_claim_failed(any_engine: Engine) -> None:
    engine = any_engine
    ids = _rows(engine, 6)
    with session_scope(engine) as s:
        repository.set_status(s, 2, ContactStatus.unsubscribed)
        paused = s.get(Contact, 3)
        assert paused is not None
        paused.paused_until = datetime.now(UTC) + timedelta(days=1)
    ledger = _Ledger(engine)
    first: OPS = [("claim", m, "", None) for m in ids]
    assert ledger._apply(first) == ["", "contact is unsubscribed", "paused", "", "", ""]
    states = _states(engine)
    assert states["m0"] == ("sending", None, 1)
    assert states["m1"] == ("suppressed", "contact is unsubscribed", 0)
    assert states["m2"] == ("suppressed", "paused", 0)
    second: OPS = [
        ("sent", "m0", "", None),
        ("failed", "m3", "550 5.1.1 no such user", None),
        ("release", "m4", "421 try later", None),
        ("claim", "m0", "", None),  # sent just now, in this very turn: not again
    ]
    assert ledger._apply(second) == ["", "", "", "done"]
    states = _states(engine)
    assert states["m0"][0] == "sent"
    assert states["m3"] == ("failed", "550 5.1.1 no such user", 1)
    assert states["m4"] == ("pending", "421 try later", 1)
    # m5 is on a connection since the first turn: a second claim of it is refused
    turn: OPS = [("note", "m4", "cannot connect", None), ("claim", "m5", "", None)]
    assert ledger._apply(turn) == ["", "done"]
    assert _states(engine)["m4"] == ("pending", "cannot connect", 1)
    assert ledger._apply([("sent", "m1", "", None)]) == [""]  # not sending: left as it is
    assert _states(engine)["m1"][0] == MessageState.suppressed.value


async def test_claims_queued_together_are_answered_and_outcomes_are_written_on_flush(
    any_engine: Engine,
) -> None:
    ids = _rows(any_engine, 4)
    ledger = _Ledger(any_engine)
    answers = await asyncio.gather(*(ledger.claim(m) for m in ids))
    assert answers == ["", "", "", ""]
    for m in ids:
        ledger.sent(m)
    await ledger.flush()
    assert {s for s, _, _ in _states(any_engine).values()} == {"sent"}
