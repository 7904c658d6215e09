"""The cross-campaign frequency cap and the change events a contact update records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import Event, Message, MessageState

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def _message(contact_id: int, key: str, at: datetime, state: MessageState) -> Message:
    return Message(
        id=key,
        key=key,
        contact_id=contact_id,
        campaign_id=key.split("/")[0],
        step_id="s",
        workflow_id=f"wf/{key}",
        template="t",
        open_token=f"tok-{key}",
        created_at=at,
        state=state,
    )


def test_the_cap_counts_every_campaign_and_frees_a_slot_as_mail_ages(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "cap@example.com")
        assert contact.id is not None
        cid = contact.id
        for key, at, state in (
            ("news/1", T0, MessageState.sent),
            ("promo/1", T0 + timedelta(days=2), MessageState.sent),
            ("promo/2", T0 + timedelta(days=3), MessageState.failed),  # never reached them
        ):
            s.add(_message(cid, key, at, state))
        s.flush()

        def full(key: str, now: datetime) -> datetime | None:
            return outbox.cap_full_until(s, contact_id=cid, key=key, limit=2, per=WEEK, now=now)

        now = T0 + timedelta(days=4)
        assert full("other/1", now) == T0 + WEEK  # two counted: wait for the oldest to age out
        assert full("news/1", now) is None  # a key that holds its slot keeps it (a retry)
        assert full("other/1", T0 + WEEK + timedelta(seconds=1)) is None
        assert outbox.cap_full_until(s, contact_id=cid, key="x", limit=3, per=WEEK, now=now) is None


def test_contact_changes_are_events_once(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "chg@example.com", {"plan": "free"})
        assert contact.id is not None
        recorded: list[int] = []
        for _ in range(2):  # the second run is a retried activity: nothing changes twice
            repository.update_contact(
                s,
                contact.id,
                add_tags=["vip"],
                set_fields={"plan": "pro"},
                add_score=5,
                score_key="wf/step/1",
                recorded=recorded,
            )
        rows = s.exec(select(Event).where(Event.contact_id == contact.id)).all()
    kinds = sorted((e.type, e.name) for e in rows)
    assert kinds == [("field_changed", "plan"), ("score", ""), ("tag_added", "vip")]
    assert sorted(recorded) == sorted(e.id for e in rows)
    changed = next(e for e in rows if e.type == "field_changed")
    assert changed.properties == {"from": "free", "to": "pro"}
