"""Contact hygiene on SQLite and PostgreSQL: normalised keys, duplicates, merging two contacts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts import erasure, repository
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.hygiene import (
    MergeRefused,
    find_duplicates,
    merge_contacts,
    normalise_email,
    normalise_phone,
)
from contacts.models import (
    Contact,
    ContactStatus,
    Enrolment,
    EnrolmentState,
    Event,
    Message,
    SegmentMember,
)


@pytest.mark.parametrize(
    ("raw", "gmail_rules", "expected"),
    [
        ("  Ann@Example.COM ", True, "ann@example.com"),
        ("A.nn+news@Gmail.com", True, "ann@gmail.com"),
        ("A.nn+news@Gmail.com", False, "a.nn+news@gmail.com"),
        ("a.n.n@googlemail.com", True, "ann@gmail.com"),
        ("a.n.n@googlemail.com", False, "a.n.n@googlemail.com"),
        # other providers keep dots and plus tags: they may be different mailboxes
        ("a.nn+x@example.com", True, "a.nn+x@example.com"),
        ("no-at-sign", True, "no-at-sign"),
    ],
)
def test_email_normalisation(raw: str, gmail_rules: bool, expected: str) -> None:
    assert normalise_email(raw, gmail_rules=gmail_rules) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("01632 960961", "GB", "+441632960961"),
        ("+44 (0)1632 960961", "GB", "+441632960961"),
        ("+1 415-555-0132", "GB", "+14155550132"),
        ("(415) 555-0132", "US", "+14155550132"),
        ("030 1234567", "DE", "+49301234567"),
        ("12", "GB", None),
        ("not a number", "GB", None),
        ("", "GB", None),
        (None, "GB", None),
    ],
)
def test_phone_normalisation(raw: str | None, region: str, expected: str | None) -> None:
    assert normalise_phone(raw, region) == expected


def _contact(engine: Engine, email: str, **fields: object) -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email, fields)
        assert contact.id is not None
        return contact.id


def test_duplicates_by_email_and_phone_and_name_suggestions(any_engine: Engine) -> None:
    ann = _contact(any_engine, "ann.lee@gmail.com", first_name="Ann", last_name="Lee")
    ann2 = _contact(any_engine, "annlee+shop@googlemail.com")
    ann3 = _contact(any_engine, "ann@work.example", phone="+44 1632 960961")
    ann4 = _contact(any_engine, "lee@home.example", phone="01632 960961")
    bob = _contact(
        any_engine, "bob@acme.example", first_name="Robert", last_name="Smith", company="Acme Ltd"
    )
    bob2 = _contact(
        any_engine, "rs@acme.example", first_name="Robert", last_name="Smyth", company="ACME Ltd."
    )
    _contact(any_engine, "carol@example.com", first_name="Carol", last_name="Jones")
    with session_scope(any_engine) as s:
        groups = find_duplicates(s, gmail_rules=True, default_region="GB")
        without_gmail = find_duplicates(s, gmail_rules=False, default_region="GB")
    exact = [g for g in groups if g.kind == "exact"]
    suggested = [g for g in groups if g.kind == "suggestion"]
    assert [g.contact_ids for g in exact] == [[ann, ann2], [ann3, ann4]]
    assert exact[0].reasons == ["email:annlee@gmail.com"] and exact[0].keep_id == ann
    assert exact[1].reasons == ["phone:+441632960961"]
    assert [g.contact_ids for g in suggested] == [[bob, bob2]]
    assert 0.88 <= suggested[0].similarity < 1
    assert [g.contact_ids for g in without_gmail if g.kind == "exact"] == [[ann3, ann4]]


def test_groups_join_transitively_and_leave_tombstones_out(any_engine: Engine) -> None:
    a = _contact(any_engine, "a.b@gmail.com")
    b = _contact(any_engine, "ab@gmail.com", phone="+14155550132")
    c = _contact(any_engine, "c@example.com", phone="(415) 555-0132")
    d = _contact(any_engine, "d@example.com", phone="+14155550132")
    with session_scope(any_engine) as s:
        erasure.erase_contact(s, d, requested_by="test")
    with session_scope(any_engine) as s:
        [group] = find_duplicates(s, gmail_rules=True, default_region="US")
    assert group.contact_ids == [a, b, c]
    assert group.reasons == ["email:ab@gmail.com", "phone:+14155550132"]


def _history(engine: Engine, contact_id: int, tag: str) -> None:
    """Two events, a message and an enrolment in ``running-one``, and a segment membership."""
    with session_scope(engine) as s:
        for i in range(2):
            repository.record_event(
                s, contact_id=contact_id, type="event", name=f"{tag}-{i}", dedupe_key=f"{tag}:{i}"
            )
        s.add(
            Message(
                id=f"m-{tag}",
                key=f"k-{tag}",
                contact_id=contact_id,
                campaign_id="running-one",
                step_id="hello",
                workflow_id=f"wf-{tag}",
                template="welcome",
                open_token=f"t-{tag}",
            )
        )
        repository.record_enrolment(
            s,
            campaign_id="running-one",
            campaign_version="v1",
            contact_id=contact_id,
            workflow_id=f"wf-{tag}",
        )
        s.add(SegmentMember(campaign_id="seg", contact_id=contact_id))


def test_merge_moves_everything_and_applies_the_rules(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        keep, _ = repository.upsert_contact(
            s, "ann@example.com", {"first_name": "Ann", "city": "Bristol"}
        )
        gone, _ = repository.upsert_contact(
            s,
            "ann.lee@gmail.com",
            {"first_name": "Annie", "last_name": "Lee", "city": ""},
            consent_source="form:newsletter",
            consent_ip="192.0.2.1",
        )
        assert keep.id is not None and gone.id is not None
        keep_id, gone_id = keep.id, gone.id
        repository.update_contact(s, keep_id, add_tags=["vip"], add_score=5, score_key="k1")
        repository.update_contact(
            s, gone_id, add_tags=["vip", "hiker"], add_score=7, score_key="k2"
        )
        repository.set_status(s, gone_id, ContactStatus.unsubscribed)
        # a campaign only the merged contact runs, and its earlier (finished) enrolment
        repository.record_enrolment(
            s,
            campaign_id="only-theirs",
            campaign_version="v1",
            contact_id=gone_id,
            workflow_id="wf-x",
        )
        repository.end_enrolment(s, "wf-x", EnrolmentState.completed)
        repository.record_enrolment(
            s,
            campaign_id="only-theirs",
            campaign_version="v1",
            contact_id=gone_id,
            workflow_id="wf-y",
            number=2,
        )
    _history(any_engine, keep_id, "keep")
    _history(any_engine, gone_id, "gone")
    with session_scope(any_engine) as s:
        before = {e.id for e in s.exec(select(Event))}
    with session_scope(any_engine) as s:
        result = merge_contacts(s, keep_id, gone_id, actor="cli")

    assert result.fields_filled == ["last_name"]
    assert result.field_conflicts == {"first_name": {"kept": "Ann", "merged": "Annie"}}
    assert result.tags_added == ["hiker"] and result.score == 12
    assert result.status == ContactStatus.unsubscribed
    assert sorted(result.journeys_to_end) == ["wf-gone", "wf-y"]
    assert result.duplicate_journeys == ["wf-gone"]
    assert result.enrolments_moved == 3 and result.messages_moved == 1
    assert result.segment_memberships_moved == 0
    with session_scope(any_engine) as s:
        kept = repository.get_contact(s, keep_id)
        assert kept.fields == {"first_name": "Ann", "city": "Bristol", "last_name": "Lee"}
        assert kept.tags == ["vip", "hiker"] and kept.score == 12
        assert kept.status == ContactStatus.unsubscribed
        assert kept.consent_source == "form:newsletter" and kept.consent_ip == "192.0.2.1"
        # every event is kept, now on the kept contact, plus the audit row
        events = s.exec(select(Event).order_by(col(Event.id))).all()
        assert before <= {e.id for e in events}
        assert {e.contact_id for e in events} == {keep_id}
        [audit] = [e for e in events if e.type == "merged"]
        assert audit.properties["merged_id"] == gone_id
        assert audit.properties["merged_email"] == "ann.lee@gmail.com"
        assert audit.source == "cli" and audit.routed_at is not None
        assert {m.contact_id for m in s.exec(select(Message))} == {keep_id}
        assert [(m.campaign_id, m.contact_id) for m in s.exec(select(SegmentMember))] == [
            ("seg", keep_id)
        ]
        enrolments = s.exec(
            select(Enrolment).order_by(col(Enrolment.campaign_id), col(Enrolment.number))
        ).all()
        assert [(e.campaign_id, e.number, e.workflow_id) for e in enrolments] == [
            ("only-theirs", 1, "wf-x"),
            ("only-theirs", 2, "wf-y"),
            # the kept contact's own journey stays its latest
            ("running-one", 1, "wf-gone"),
            ("running-one", 2, "wf-keep"),
        ]
        assert {e.contact_id for e in enrolments} == {keep_id}
        tomb = repository.get_contact(s, gone_id)
        assert tomb.email == f"merged-{gone_id}@invalid"
        assert tomb.status == ContactStatus.unsubscribed and tomb.fields == {} and tomb.tags == []
        # the old address is free again and is the kept contact's duplicate no more
        assert repository.get_contact_by_email(s, "ann.lee@gmail.com") is None
        assert find_duplicates(s, gmail_rules=True) == []


def test_status_and_consent_rules(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        keep, _ = repository.upsert_contact(s, "k@example.com", consent_source="form:a")
        gone, _ = repository.upsert_contact(s, "g@example.com", consent_source="form:b")
        assert keep.id is not None and gone.id is not None
        keep.consent_at = datetime(2024, 1, 1, tzinfo=UTC)
        gone.consent_at = datetime(2025, 1, 1, tzinfo=UTC)
        repository.set_status(s, keep.id, ContactStatus.complained)
        repository.set_status(s, gone.id, ContactStatus.bounced)
        ids = keep.id, gone.id
    with session_scope(any_engine) as s:
        result = merge_contacts(s, *ids, actor="test")
        kept = repository.get_contact(s, ids[0])
    assert result.status == ContactStatus.complained
    assert kept.consent_source == "form:a" and result.journeys_to_end == []


def test_merges_that_cannot_be(any_engine: Engine) -> None:
    a = _contact(any_engine, "a@example.com")
    b = _contact(any_engine, "b@example.com")
    c = _contact(any_engine, "c@example.com")
    with session_scope(any_engine) as s:
        with pytest.raises(MergeRefused):
            merge_contacts(s, a, a, actor="test")
        with pytest.raises(NotFound):
            merge_contacts(s, a, 999_999, actor="test")
    with session_scope(any_engine) as s:
        merge_contacts(s, a, b, actor="test")
    with session_scope(any_engine) as s, pytest.raises(MergeRefused):
        merge_contacts(s, c, b, actor="test")
    with session_scope(any_engine) as s:
        erasure.erase_contact(s, c, requested_by="test")
    with session_scope(any_engine) as s, pytest.raises(MergeRefused):
        merge_contacts(s, a, c, actor="test")
    with session_scope(any_engine) as s:
        assert s.exec(select(Contact).where(Contact.id == a)).one().email == "a@example.com"
