"""Every source of an outgoing webhook event writes it once, with its documented payload, in the
transaction of the change it reports (``contacts.webhook_sources``; the table of types and
payloads is in ``docs/concepts/webhooks-out.md``). SQLite and PostgreSQL (``any_engine``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.sales import load_sales_plan
from contacts import alerts, broadcasts, erasure, hits, outbox, repository
from contacts import webhook_events as we
from contacts._merge import merge_contacts
from contacts.broadcast_models import BroadcastSend, SendState
from contacts.db import session_scope
from contacts.models import Contact, EnrolmentState, Link, Message, MessageState, utcnow
from tests.support import EXAMPLES
from workflows.broadcast_activities import _Ledger
from workflows.lifecycle import SalesPipeline


def _events(engine: Engine, type: str | None = None) -> list[we.WebhookEvent]:
    with session_scope(engine) as s:
        stmt = select(we.WebhookEvent).order_by(we.WebhookEvent.seq)  # type: ignore[arg-type]
        rows = [e for e in s.exec(stmt) if type is None or e.type == type]
        for e in rows:
            s.expunge(e)
        return rows


def _contact(engine: Engine, email: str = "ann@example.com") -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email)
        assert contact.id is not None
        return contact.id


def _message(engine: Engine, contact_id: int, mid: str = "m1", campaign: str = "welcome") -> str:
    with session_scope(engine) as s:
        s.add(
            Message(
                id=mid,
                key=f"k:{mid}",
                contact_id=contact_id,
                campaign_id=campaign,
                step_id="hello" if campaign == "welcome" else "email",
                workflow_id=f"w:{mid}",
                template="welcome",
                open_token=f"open-{mid}",
                state=MessageState.sending,
                created_at=utcnow() - timedelta(hours=1),
            )
        )
    return mid


def _about(contact_id: int, mid: str = "m1") -> dict[str, Any]:
    return {
        "message_id": mid,
        "contact_id": contact_id,
        "email": "ann@example.com",
        "campaign_id": "welcome",
        "step_id": "hello",
        "broadcast_id": None,
    }


def _stamp(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The payload with its timestamps checked to be ISO 8601 and taken out."""
    for key in keys:
        value = data.pop(key)
        assert isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None, key
    return data


def test_contact_created_then_updated_once_per_change(any_engine: Engine) -> None:
    engine = any_engine
    with session_scope(engine) as s:
        ann, created = repository.upsert_contact(s, "Ann@Example.com", {"name": "Ann"})
        assert created and ann.id is not None
        repository.upsert_contact(s, "ann@example.com", {"name": "Ann"})  # nothing new
    for _ in range(2):  # a retried activity: tags and fields are sets, the score has its key
        with session_scope(engine) as s:
            repository.update_contact(
                s,
                ann.id,
                add_tags=["vip"],
                set_fields={"plan": "pro"},
                add_score=5,
                score_key="k1",
                source="api",
            )
    with session_scope(engine) as s:
        repository.upsert_contact(s, "ann@example.com", {"city": "Leeds", "name": "Ann"})
    created_, updated, merged_fields = _events(engine)
    assert (created_.type, created_.contact_id) == (we.CONTACT_CREATED, ann.id)
    assert _stamp(created_.data, "created_at") == {"contact_id": ann.id, "email": "ann@example.com"}
    assert updated.type == we.CONTACT_UPDATED
    assert updated.data == {
        "contact_id": ann.id,
        "email": "ann@example.com",
        "tags_added": ["vip"],
        "tags_removed": [],
        "fields_changed": ["plan"],
        "score": 5,
        "source": "api",
    }
    assert merged_fields.data["fields_changed"] == ["city"]
    assert merged_fields.data["tags_added"] == [] and merged_fields.data["score"] is None


def test_a_rolled_back_change_writes_no_event(any_engine: Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(any_engine) as s:
        repository.upsert_contact(s, "ann@example.com")
        raise RuntimeError("the request fails after the change")
    assert _events(any_engine) == []
    with session_scope(any_engine) as s:
        assert s.exec(select(Contact)).first() is None


def test_message_sent_once_by_the_move_to_sent(any_engine: Engine) -> None:
    engine = any_engine
    ann = _contact(engine)
    mid = _message(engine, ann)
    for _ in range(2):
        with session_scope(engine) as s:
            outbox.finish_send(s, mid, MessageState.sent)
    with session_scope(engine) as s:  # a failure is not a send
        outbox.finish_send(s, _message(engine, ann, "m2"), MessageState.failed, "550")
    [sent] = _events(engine, we.MESSAGE_SENT)
    assert sent.contact_id == ann
    assert _stamp(sent.data, "sent_at") == _about(ann)


def test_broadcast_ledger_writes_message_sent_for_each_email_of_the_turn(
    any_engine: Engine,
) -> None:
    engine = any_engine
    ids = [
        _message(engine, _contact(engine, f"b{i}@example.com"), f"b{i}", "broadcast:x")
        for i in range(3)
    ]
    ledger = _Ledger(engine)
    ledger._apply([("sent", m, "", None) for m in ids] + [("failed", "nope", "550", None)])
    ledger._apply([("sent", ids[0], "", None)])  # already sent: no second event
    sent = _events(engine, we.MESSAGE_SENT)
    assert sorted(e.data["message_id"] for e in sent) == ids
    one = next(e for e in sent if e.data["message_id"] == "b1")
    assert _stamp(one.data, "sent_at") == {
        "message_id": "b1",
        "contact_id": one.contact_id,
        "email": "b1@example.com",
        "campaign_id": "broadcast:x",
        "step_id": "email",
        "broadcast_id": "x",
    }


@pytest.mark.parametrize(
    ("kind", "type", "extra"),
    [
        ("delivered", we.MESSAGE_DELIVERED, {"source": "postmark"}),
        ("hard", we.MESSAGE_BOUNCED, {"source": "smtp", "kind": "hard"}),
        ("soft", we.MESSAGE_BOUNCED, {"source": "smtp", "kind": "soft"}),
        ("complaint", we.MESSAGE_COMPLAINED, {"source": "ses"}),
    ],
)
def test_delivery_reports_once_per_report(
    any_engine: Engine, kind: str, type: str, extra: dict[str, Any]
) -> None:
    engine = any_engine
    ann = _contact(engine)
    mid = _message(engine, ann)
    for _ in range(2):  # the provider retries its webhook: one event
        with session_scope(engine) as s:
            if kind == "delivered":
                repository.record_event(
                    s,
                    contact_id=ann,
                    type="delivered",
                    dedupe_key="postmark:1",
                    source="postmark",
                    message_id=mid,
                )
            else:
                repository.record_bounce(
                    s,
                    contact_id=ann,
                    kind=kind,  # type: ignore[arg-type]
                    dedupe_key=f"{kind}:1",
                    soft_limit=3,
                    message_id=mid,
                    source=str(extra["source"]),
                )
    [event] = _events(engine, type)
    assert _stamp(event.data, "occurred_at") == {**_about(ann), **extra}


@pytest.mark.parametrize("door", ["one-click", "api", "preferences"])
def test_unsubscribed_once(any_engine: Engine, door: str) -> None:
    engine = any_engine
    ann = _contact(engine)
    mid = _message(engine, ann)
    with session_scope(engine) as s:
        repository.record_event(
            s,
            contact_id=ann,
            type="unsubscribe",
            source=door,
            dedupe_key=f"unsubscribe:{door}",
            message_id=mid if door == "one-click" else None,
        )
    [event] = _events(engine, we.CONTACT_UNSUBSCRIBED)
    assert event.data == {
        "contact_id": ann,
        "email": "ann@example.com",
        "source": door,
        "message_id": mid if door == "one-click" else None,
    }


def test_merged_and_erased(any_engine: Engine) -> None:
    engine = any_engine
    ann, other = _contact(engine), _contact(engine, "ann.work@example.com")
    with session_scope(engine) as s:
        merge_contacts(s, ann, other, actor="api:test")
    [merged] = _events(engine, we.CONTACT_MERGED)
    assert merged.data == {
        "contact_id": ann,
        "email": "ann@example.com",
        "merged_id": other,
        "merged_email": "ann.work@example.com",
    }
    with session_scope(engine) as s:
        erasure.erase_contact(s, ann, requested_by="api:test")
    with session_scope(engine) as s:  # asked again: erased already, nothing new
        erasure.erase_contact(s, ann, requested_by="api:test")
    [erased] = _events(engine, we.CONTACT_ERASED)
    assert (erased.contact_id, erased.data) == (ann, {"contact_id": ann})
    # the erasure's own unsubscribe is part of contact.erased, and nothing carries the address
    assert _events(engine, we.CONTACT_UNSUBSCRIBED) == []
    assert not [e for e in _events(engine) if "ann@example.com" in str(e.data)]
    assert _events(engine, we.CONTACT_CREATED)[0].data == {"contact_id": ann, "erased": True}


def test_opened_and_clicked_per_hit_with_the_filters_verdict(any_engine: Engine) -> None:
    engine = any_engine
    ann = _contact(engine)
    mid = _message(engine, ann)
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        outbox.finish_send(s, mid, MessageState.sent)
        s.add(Link(message_id=mid, position=0, url="https://acme.example/a", token="lnk0"))
        s.add(Link(message_id=mid, position=1, url="https://acme.example/b", token="lnk1"))
    with session_scope(engine) as s:
        hits.insert_hits(
            s,
            [
                hits.NewHit("open", "open-m1", now - timedelta(minutes=5), user_agent="Mail"),
                hits.NewHit("open", "open-m1", now - timedelta(minutes=4), user_agent="Proxy"),
                hits.NewHit("click", "lnk1", now - timedelta(minutes=3), user_agent="Mail"),
            ],
        )
    verdict: Callable[[str], str | None] = lambda ua: "apple_mpp" if ua == "Proxy" else None  # noqa: E731
    for _ in range(2):  # consumed once: a second pass finds nothing
        with session_scope(engine) as s:
            hits.consume(s, now=now, classify_user_agent=verdict, min_seconds_after_send=0)
    opens = _events(engine, we.MESSAGE_OPENED)
    assert [(e.data["machine"], e.data["bot_reason"]) for e in opens] == [
        (False, None),
        (True, "apple_mpp"),
    ]
    assert _stamp(opens[0].data, "occurred_at") == {
        **_about(ann),
        "machine": False,
        "bot_reason": None,
    }
    [click] = _events(engine, we.MESSAGE_CLICKED)
    assert _stamp(click.data, "occurred_at") == {
        **_about(ann),
        "machine": False,
        "bot_reason": None,
        "url": "https://acme.example/b",
        "position": 1,
    }


def test_journey_started_converted_and_exited_once(any_engine: Engine) -> None:
    engine = any_engine
    ann = _contact(engine)
    for number, state in ((1, EnrolmentState.converted), (2, EnrolmentState.exited)):
        workflow_id = f"journey:welcome:{ann}:{number}"
        for _ in range(2):  # the router's retry; finish_journey's retry
            with session_scope(engine) as s:
                repository.record_enrolment(
                    s,
                    campaign_id="welcome",
                    campaign_version="v1",
                    contact_id=ann,
                    workflow_id=workflow_id,
                    number=number,
                )
        for _ in range(2):
            with session_scope(engine) as s:
                repository.end_enrolment(s, workflow_id, state, "unsubscribed")
    events = [e for e in _events(engine) if e.type.startswith("journey.")]
    assert [e.type for e in events] == [
        we.JOURNEY_STARTED,
        we.JOURNEY_CONVERTED,
        we.JOURNEY_STARTED,
        we.JOURNEY_EXITED,
    ]
    exited = events[3].data
    assert _stamp(exited, "started_at", "ended_at") == {
        "workflow_id": f"journey:welcome:{ann}:2",
        "campaign_id": "welcome",
        "campaign_version": "v1",
        "number": 2,
        "contact_id": ann,
        "email": "ann@example.com",
        "state": "exited",
        "reason": "unsubscribed",
    }
    assert events[0].data["state"] == "running" and events[0].data["ended_at"] is None


def test_broadcast_started_and_finished_once(any_engine: Engine) -> None:
    engine = any_engine
    with session_scope(engine) as s:
        broadcasts.create_send(
            s, BroadcastSend(id="broadcast:bf:1", broadcast_id="bf", version="v1", plan={})
        )
    for state in (SendState.sending, SendState.paused, SendState.sending, SendState.completed):
        with session_scope(engine) as s:
            broadcasts.set_state(s, "broadcast:bf:1", state)
    with session_scope(engine) as s:  # a late signal cannot revive (or re-finish) it
        broadcasts.set_state(s, "broadcast:bf:1", SendState.cancelled)
    started, finished = _events(engine)
    assert (started.type, started.contact_id) == (we.BROADCAST_STARTED, None)
    assert _stamp(started.data, "started_at") == {
        "broadcast_id": "bf",
        "send_id": "broadcast:bf:1",
        "number": 1,
        "state": "sending",
        "audience": None,
        "finished_at": None,
    }
    assert finished.type == we.BROADCAST_FINISHED
    assert finished.data["state"] == "completed"
    _stamp(finished.data, "started_at", "finished_at")


def test_stage_changed_lead_qualified_and_acknowledged(any_engine: Engine) -> None:
    engine = any_engine
    pipeline = SalesPipeline(load_sales_plan(EXAMPLES / "sales.yaml"))  # mql at 25 points
    with session_scope(engine) as s:
        ann, _ = repository.upsert_contact(
            s, "ann@example.com", {"title": "Head of Outdoor Education", "country": "GB"}
        )
        assert ann.id is not None
        followups = []
        for path in ("/pricing", "/about"):
            event, _ = repository.record_event(
                s,
                contact_id=ann.id,
                type="page",
                dedupe_key=f"page:{path}",
                properties={"path": path},
            )
            followups += pipeline.on_event(s, event, now=utcnow())
    [followup] = followups
    for _ in range(2):
        with session_scope(engine) as s:
            alerts.acknowledge_alert(s, followup.alert_id, "tom@acme.example")
    [stage] = _events(engine, we.CONTACT_STAGE_CHANGED)
    assert stage.data["stage_change_id"] is not None
    assert _stamp(stage.data, "at") == {
        "contact_id": ann.id,
        "email": "ann@example.com",
        "from_stage": "subscriber",
        "to_stage": "mql",
        "by": "rules",
        "stage_change_id": stage.data["stage_change_id"],
    }
    [qualified] = _events(engine, we.LEAD_QUALIFIED)
    assert qualified.data["alert_id"] == followup.alert_id
    assert qualified.data["state"] == "open" and qualified.data["acknowledged_at"] is None
    [acknowledged] = _events(engine, we.LEAD_ACKNOWLEDGED)
    data = _stamp(acknowledged.data, "created_at", "acknowledged_at")
    assert data == {
        "alert_id": followup.alert_id,
        "contact_id": ann.id,
        "email": "ann@example.com",
        "owner": data["owner"],
        "team_id": data["team_id"],
        "state": "acknowledged",
        "acknowledged_by": "tom@acme.example",
    }
