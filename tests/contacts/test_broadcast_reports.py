"""A broadcast send's figures (``contacts.broadcast_reports``) on SQLite and PostgreSQL, from
rows written by the writers production uses: outbox rows through ``contacts.outbox`` as the
engine leaves them, human and machine hits through the tracking consumer (which keeps the
rollups), bounces and complaints through ``record_bounce``, unsubscribes as ``record_event``.

Every expected number is counted by hand from what the test wrote: a send of 10 recipients
(8 sent, one suppressed, one still pending), an A/B test on 6 of them, and a second send of
the same broadcast whose opens must not leak into the first's figures (nor the first's into
the second's).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from contacts import outbox, repository
from contacts.broadcast_models import BroadcastRecipient, BroadcastSend, SendState
from contacts.broadcast_reports import (
    PACE_WINDOW,
    SendProgress,
    ab_result,
    broadcast_rows,
    hourly_activity,
    send_progress,
    send_report,
)
from contacts.db import session_scope
from contacts.hits import NewHit, consume, insert_hits
from contacts.models import Message, MessageState, utcnow
from contacts.splits import two_proportion_test

PLAN = {
    "broadcast_id": "news",
    "subject": "December news",
    "variants": [{"id": "a", "subject": "Subject A"}, {"id": "b", "subject": "Subject B"}],
    "ab_metric": "opens",
}


def _send(
    s: Session, number: int, *, state: SendState, audience: int, started: datetime, sample: int
) -> str:
    send_id = f"broadcast:news:{number}"
    s.add(
        BroadcastSend(
            id=send_id,
            broadcast_id="news",
            number=number,
            name="December news",
            version="v1",
            plan=PLAN,
            state=state,
            audience=audience,
            sample=sample,
            created_at=started - timedelta(seconds=5),
            started_at=started,
        )
    )
    s.flush()
    return send_id


def _email(s: Session, send_id: str, contact_id: int, step: str, state: MessageState) -> str:
    """The contact's outbox row as the engine leaves it, then moved to ``state``."""
    number = send_id.rsplit(":", 1)[1]
    message_id = f"m-{number}-{contact_id}"
    outbox.reserve_message(
        s,
        Message(
            id=message_id,
            key=f"{send_id}:{contact_id}",
            contact_id=contact_id,
            campaign_id="broadcast:news",
            campaign_version=number,
            step_id=step,
            workflow_id=send_id,
            template="news",
            open_token=f"o-{message_id}",
        ),
    )
    if state is not MessageState.pending:
        assert outbox.begin_send(s, message_id)
        reason = "contact is unsubscribed" if state is MessageState.suppressed else None
        outbox.finish_send(s, message_id, state, reason)
    return message_id


def _human(s: Session, contact_id: int, kind: str, message_id: str, at: datetime) -> None:
    """A first human open or click, as the hit consumer records one (rollups included)."""
    repository.record_event(
        s,
        contact_id=contact_id,
        type=kind,
        dedupe_key=f"{kind}:{message_id}",
        message_id=message_id,
        occurred_at=at,
    )


def _machine_opens(engine: Engine, tokens: list[str]) -> None:
    """Privacy-proxy fetches of the pixel, stored and judged by the tracking consumer."""
    with session_scope(engine) as s:
        insert_hits(s, [NewHit("open", t, utcnow(), user_agent="Proxy") for t in tokens])
    with session_scope(engine) as s:
        consume(s, now=utcnow(), classify_user_agent=lambda _: "apple_mpp",
                min_seconds_after_send=0)  # fmt: skip


@pytest.fixture
def world(any_engine: Engine) -> dict[str, object]:
    """Send 1 (sending, audience 10, A/B sample of 6) and send 2 (completed, 2 recipients)."""
    now = utcnow()
    started = now - timedelta(seconds=30)
    with session_scope(any_engine) as s:
        ids = []
        for i in range(11):
            contact, _ = repository.upsert_contact(s, f"r{i}@example.com", consent_source="test")
            assert contact.id is not None
            ids.append(contact.id)
        first = _send(s, 1, state=SendState.sending, audience=10, started=started, sample=6)
        # the A/B sample: a, b, a, b, a, b; then the rest get the winner's step ("a")
        msgs: dict[int, str] = {}
        for seq, cid in enumerate(ids[:10], start=1):
            variant = "ab"[(seq - 1) % 2] if seq <= 6 else ""
            s.add(BroadcastRecipient(send_id=first, seq=seq, contact_id=cid, variant=variant))
            state = MessageState.sent
            if seq == 9:
                state = MessageState.suppressed
            if seq == 10:
                state = MessageState.pending
            msgs[seq] = _email(s, first, cid, variant or "a", state)
        s.flush()
        # opens: a's 1 and 5 (2 of 3), b's 2 (1 of 3), and 7 of the rest; 1 opens twice
        _human(s, ids[0], "open", msgs[1], started + timedelta(minutes=10))
        _human(s, ids[4], "open", msgs[5], started + timedelta(hours=2, minutes=5))
        _human(s, ids[1], "open", msgs[2], started + timedelta(hours=2, minutes=30))
        _human(s, ids[6], "open", msgs[7], started + timedelta(hours=2, minutes=40))
        repository.record_event(
            s, contact_id=ids[0], type="open", dedupe_key="again", message_id=msgs[1],
            occurred_at=started + timedelta(hours=3),
        )  # fmt: skip
        _human(s, ids[0], "click", msgs[1], started + timedelta(minutes=11))
        repository.record_bounce(
            s, contact_id=ids[2], kind="hard", dedupe_key="b3", soft_limit=3, message_id=msgs[3]
        )
        repository.record_bounce(
            s, contact_id=ids[3], kind="complaint", dedupe_key="c4", soft_limit=3,
            message_id=msgs[4],
        )  # fmt: skip
        # unsubscribes: 6 from this email's link; 8 from the preference page after it came;
        # the contact who got nothing (pending, 10) unsubscribing counts for no email of it
        for seq, named in ((6, True), (8, False), (10, False)):
            repository.record_event(
                s, contact_id=ids[seq - 1], type="unsubscribe", dedupe_key=f"u{seq}",
                message_id=msgs[seq] if named else None,
            )  # fmt: skip
        second = _send(s, 2, state=SendState.completed, audience=2, started=now, sample=0)
        again = _email(s, second, ids[0], "a", MessageState.sent)
        other = _email(s, second, ids[10], "a", MessageState.sent)
        _human(s, ids[0], "open", again, now + timedelta(minutes=1))
        _human(s, ids[10], "open", other, now + timedelta(minutes=1))
    _machine_opens(any_engine, [f"o-{msgs[2]}", f"o-{msgs[2]}", f"o-{msgs[8]}", f"o-{again}"])
    return {"first": first, "second": second, "started": started, "now": now}


def test_the_figures_of_a_send_are_its_own(any_engine: Engine, world: dict[str, object]) -> None:
    now = world["now"]
    assert isinstance(now, datetime)
    with session_scope(any_engine) as s:
        report = send_report(s, str(world["first"]), now=now)
        progress = send_progress(s, str(world["first"]), now=now)
    assert report is not None
    # the live section's cheaper read is the report's progress, to the field
    assert progress == SendProgress(**{f.name: getattr(report, f.name) for f in fields(progress)})
    assert report.by_state == {
        "pending": 1, "sending": 0, "sent": 8, "failed": 0, "suppressed": 1, "interrupted": 0,
    }  # fmt: skip
    assert (report.sent, report.done, report.audience) == (8, 9, 10)
    assert report.suppressed_by_reason == {"contact is unsubscribed": 1}
    # 1, 2, 5 and 7 opened (1 twice, counted once); 1 clicked
    assert (report.opened, report.clicked) == (4, 1)
    assert (report.open_rate, report.click_rate) == (4 / 8, 1 / 8)
    assert (report.bot_opens, report.bot_clicks) == (3, 0)  # send 2's machine hit is not its
    assert (report.unsubscribes, report.bounces, report.complaints) == (2, 1, 1)
    # 8 sent in the 30 s since it started: 8/30 a second, 1 recipient left
    assert report.rate == pytest.approx(8 / 30)
    assert report.eta_seconds == pytest.approx(1 / (8 / 30))
    assert report.live


def test_a_broadcast_sent_twice_counts_each_send_apart(
    any_engine: Engine, world: dict[str, object]
) -> None:
    """With two sends the campaign rollups mix them, so each send counts its own rows; the
    figures must equal those counted from the send's own rows whatever path is taken."""
    with session_scope(any_engine) as s:
        second = send_report(s, str(world["second"]), now=utcnow())
        exact = send_report(s, str(world["second"]), now=utcnow(), exact=True)
    assert second is not None and second == exact
    assert (second.sent, second.opened, second.bot_opens, second.unsubscribes) == (2, 2, 1, 0)
    assert second.rate is None and second.eta_seconds is None and not second.live


def test_the_rollup_path_of_a_single_send_agrees_with_its_rows(any_engine: Engine) -> None:
    """A broadcast sent once is counted from the rollups (fast at a million recipients);
    those must give what the send's own rows give."""
    now = utcnow()
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "solo@example.com", consent_source="test")
        assert contact.id is not None
        send = _send(s, 1, state=SendState.completed, audience=1, started=now, sample=0)
        message = _email(s, send, contact.id, "email", MessageState.sent)
        _human(s, contact.id, "open", message, now + timedelta(minutes=1))
        _human(s, contact.id, "click", message, now + timedelta(minutes=2))
    _machine_opens(any_engine, [f"o-{message}"])
    with session_scope(any_engine) as s:
        fast = send_report(s, send, now=now)
        exact = send_report(s, send, now=now, exact=True)
        [row] = broadcast_rows(s, now=now)
    assert fast is not None and fast == exact
    assert (fast.sent, fast.opened, fast.clicked, fast.bot_opens) == (1, 1, 1, 1)
    assert row.report == fast and row.sends == 1


def test_the_list_has_each_broadcast_by_its_latest_send(
    any_engine: Engine, world: dict[str, object]
) -> None:
    with session_scope(any_engine) as s:
        [row] = broadcast_rows(s, now=utcnow())
    assert (row.report.id, row.sends, row.report.sent, row.report.opened) == (
        world["second"], 2, 2, 2,
    )  # fmt: skip


def test_opens_by_hour_since_sending(any_engine: Engine, world: dict[str, object]) -> None:
    started = world["started"]
    assert isinstance(started, datetime)
    with session_scope(any_engine) as s:
        hourly = hourly_activity(s, str(world["first"]))
    assert hourly is not None
    assert hourly.start == started.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    offset = started - hourly.start  # the hour 0 starts on the clock hour of the start
    expected_open = [0, 0, 0, 0]
    for after in (timedelta(minutes=10), timedelta(hours=2, minutes=5),
                  timedelta(hours=2, minutes=30), timedelta(hours=2, minutes=40),
                  timedelta(hours=3)):  # fmt: skip
        expected_open[int((offset + after).total_seconds() // 3600)] += 1
    expected_click = [0] * 4
    expected_click[int((offset + timedelta(minutes=11)).total_seconds() // 3600)] += 1
    shown = max(i for i, n in enumerate(expected_open) if n) + 1
    assert hourly.opened == expected_open[:shown]
    assert hourly.clicked == expected_click[:shown]
    assert hourly.chart_data()["unit"] == "hour"
    with session_scope(any_engine) as s:
        later = hourly_activity(s, str(world["first"]), now=hourly.start + timedelta(hours=9))
        capped = hourly_activity(s, str(world["first"]), hours=2)
    assert later is not None and later.opened == expected_open[:shown] + [0] * (10 - shown)
    first_two = expected_open[:2]
    while first_two and not first_two[-1]:  # shown up to the last hour with an open or click
        first_two.pop()
    assert capped is not None and capped.opened == first_two + [0] * (
        len(capped.opened) - len(first_two)
    )
    assert len(capped.opened) <= 2


def test_the_ab_result_is_measured_on_the_sample(
    any_engine: Engine, world: dict[str, object]
) -> None:
    """a: recipients 1, 3, 5 (1 and 5 opened); b: 2, 4, 6 (2 opened). Recipient 7 got a's
    email after the test and opened it: not in the test's figures."""
    with session_scope(any_engine) as s:
        ab = ab_result(s, str(world["first"]))
    assert ab is not None
    assert (ab.metric, ab.sample, ab.winner, ab.leader) == ("opens", 6, None, "a")
    a, b = ab.variants
    assert (a.id, a.subject, a.sent, a.opened, a.clicked) == ("a", "Subject A", 3, 2, 1)
    assert (b.id, b.subject, b.sent, b.opened, b.clicked) == ("b", "Subject B", 3, 1, 0)
    assert (a.rate, b.rate) == (2 / 3, 1 / 3)
    assert a.uplift is None and a.confidence is None  # the leader
    assert (b.uplift, b.confidence) == two_proportion_test(1, 3, 2, 3)
    assert b.uplift == pytest.approx(1.0)  # a's rate is twice b's


def test_the_picked_winner_leads_even_behind(any_engine: Engine, world: dict[str, object]) -> None:
    """Once the engine picked a winner, uplifts are the winner's, whatever the rates do later."""
    with session_scope(any_engine) as s:
        send = s.get(BroadcastSend, str(world["first"]))
        assert send is not None
        send.winner, send.ab_figures = "b", {"metric": "opens", "variants": {"b": {"rate": 0.5}}}
        s.add(send)
    with session_scope(any_engine) as s:
        ab = ab_result(s, str(world["first"]))
    assert ab is not None and (ab.winner, ab.leader) == ("b", "b")
    a, b = ab.variants
    assert (a.uplift, a.confidence) == two_proportion_test(2, 3, 1, 3)
    assert a.uplift == pytest.approx(-0.5)
    assert b.uplift is None
    assert ab.picked_on["variants"] == {"b": {"rate": 0.5}}


def test_no_ab_result_without_a_test_and_nothing_for_an_unknown_send(any_engine: Engine) -> None:
    now = utcnow()
    with session_scope(any_engine) as s:
        s.add(
            BroadcastSend(
                id="broadcast:plain:1", broadcast_id="plain", version="v1", plan={},
                state=SendState.scheduled,
            )
        )  # fmt: skip
        s.flush()
        assert ab_result(s, "broadcast:plain:1") is None
        report = send_report(s, "broadcast:plain:1", now=now)
        assert report is not None and report.sent == 0 and report.audience is None
        assert report.rate is None and report.share_done is None
        assert send_report(s, "broadcast:nope:1", now=now) is None
        assert hourly_activity(s, "broadcast:nope:1") is None


def test_the_pace_counts_only_the_last_minute(any_engine: Engine) -> None:
    """Of 3 emails, 2 sent within the last ``PACE_WINDOW``: the pace is 2 over the window."""
    now = utcnow()
    long_ago = now - 5 * PACE_WINDOW
    with session_scope(any_engine) as s:
        ids = []
        for i in range(4):
            contact, _ = repository.upsert_contact(s, f"p{i}@example.com", consent_source="t")
            assert contact.id is not None
            ids.append(contact.id)
        send = _send(s, 1, state=SendState.sending, audience=4, started=long_ago, sample=0)
        first = _email(s, send, ids[0], "email", MessageState.sent)
        _email(s, send, ids[1], "email", MessageState.sent)
        _email(s, send, ids[2], "email", MessageState.sent)
        sent_before = s.get(Message, first)
        assert sent_before is not None
        sent_before.sent_at = long_ago
        s.add(sent_before)
    with session_scope(any_engine) as s:
        report = send_report(s, send, now=now)
    assert report is not None
    assert report.rate == pytest.approx(2 / PACE_WINDOW.total_seconds())
    assert report.eta_seconds == pytest.approx(1 / report.rate)
    # while the A/B test waits (and while paused) nothing is going out: no pace, no time to go
    for waiting in (SendState.testing, SendState.paused):
        with session_scope(any_engine) as s:
            row = s.get(BroadcastSend, send)
            assert row is not None
            row.state = waiting
            s.add(row)
        with session_scope(any_engine) as s:
            report = send_report(s, send, now=now)
        assert report is not None and (report.rate, report.eta_seconds) == (None, None)
