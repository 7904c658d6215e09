"""Bounces: which permanent SMTP refusals are hard, soft or no bounce at all (``bounce_kind``),
what real servers' replies become, and the suppression rule (``repository.record_bounce``):
hard bounces and complaints suppress at once, soft bounces after ``soft_limit``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import aiosmtplib
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts import repository
from contacts.db import session_scope
from contacts.models import ContactStatus, Event, utcnow
from drip.settings import Settings
from emails import PermanentSendError, TransientSendError, classify_smtp_error
from emails.sender import bounce_kind, enhanced_status
from tests.emails.test_sender import Scripted, _send, aiosmtpd_server, transport

# --- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "status"),
    [
        (550, "5.1.1 no such user", "5.1.1"),
        (550, "  5.1.1 <a@example.com>: no such user", "5.1.1"),
        (550, "5.1.10 recipient has a null MX", "5.1.10"),
        (552, "5.2.2 mailbox full\n5.2.2 try another day", "5.2.2"),
        (451, "4.3.0 try later", "4.3.0"),
        (550, "4.2.2 class disagrees with the reply code", None),
        (550, "no such user here", None),
        (550, "user 5.1.1 not at the start", None),
        (550, "5.1.1.2 not a status code", None),
        (550, "", None),
    ],
)
def test_enhanced_status(code: int, text: str, status: str | None) -> None:
    assert enhanced_status(code, text) == status


HARD, SOFT = "hard", "soft"


@pytest.mark.parametrize(
    ("code", "text", "stage", "kind"),
    [
        # the enhanced status code decides, at RCPT TO or DATA
        (550, "5.1.1 no such user", "rcpt", HARD),
        (550, "5.1.1 no such user", "data", HARD),
        (553, "5.1.3 bad address syntax", "rcpt", HARD),
        (550, "5.1.2 no such domain", "rcpt", HARD),
        (556, "5.1.10 null MX", "rcpt", HARD),
        (550, "5.1.6 mailbox moved", "rcpt", HARD),
        (550, "5.2.1 the account is disabled", "rcpt", HARD),
        (552, "5.2.2 mailbox full", "rcpt", SOFT),
        (552, "5.2.2 mailbox full", "data", SOFT),
        (552, "5.2.3 message too big", "data", SOFT),
        (550, "5.3.0 mail system trouble", "rcpt", SOFT),
        (550, "5.4.4 unable to route", "rcpt", SOFT),
        (554, "5.6.0 content refused", "data", SOFT),
        (550, "5.7.1 rejected as spam", "data", SOFT),
        (550, "5.7.1 relaying denied", "rcpt", SOFT),
        (550, "5.7.26 unauthenticated mail", "data", SOFT),
        # a bad *sender* address is no verdict on the recipient
        (553, "5.1.7 bad sender address syntax", "rcpt", None),
        (550, "5.1.8 bad sender domain", "data", None),
        # without an enhanced code (or 5.0.0), the reply code and the command decide
        (550, "no such user", "rcpt", HARD),
        (551, "user not local", "rcpt", HARD),
        (553, "mailbox name not allowed", "rcpt", HARD),
        (556, "domain does not accept mail", "rcpt", HARD),
        (550, "5.0.0 no such user", "rcpt", HARD),
        (552, "storage exceeded", "rcpt", SOFT),
        (554, "transaction failed", "rcpt", SOFT),
        (550, "content rejected", "data", SOFT),
        (554, "5.0.0 transaction failed", "data", SOFT),
        # a refused sender, or a refusal outside MAIL/RCPT/DATA, says nothing about the address
        (550, "5.1.1 sender unknown", "mail", None),
        (550, "5.7.1 sender rejected", "mail", None),
        (553, "not allowed to relay", "mail", None),
        (554, "5.7.3 TLS not available", None, None),
        # not a permanent refusal at all
        (452, "4.2.2 mailbox full", "rcpt", None),
    ],
)
def test_bounce_kind(code: int, text: str, stage: str | None, kind: str | None) -> None:
    assert bounce_kind(code, text, stage=stage) == kind  # type: ignore[arg-type]


def _refused(*replies: tuple[int, str]) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(c, m, f"r{i}@example.com")
            for i, (c, m) in enumerate(replies)
        ]
    )


@pytest.mark.parametrize(
    ("exc", "kind", "status"),
    [
        (_refused((550, "5.1.1 no such user")), HARD, "5.1.1"),
        (_refused((550, "no such user")), HARD, None),
        (_refused((552, "5.2.2 mailbox full")), SOFT, "5.2.2"),
        (aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@x"), HARD, "5.1.1"),
        (aiosmtplib.SMTPDataError(552, "5.2.2 mailbox full"), SOFT, "5.2.2"),
        (aiosmtplib.SMTPDataError(550, "5.1.1 unknown user"), HARD, "5.1.1"),
        (aiosmtplib.SMTPDataError(554, "rejected"), SOFT, None),
        (aiosmtplib.SMTPSenderRefused(550, "5.7.1 sender rejected", "a@x"), None, "5.7.1"),
        (aiosmtplib.SMTPResponseException(554, "5.7.3 no TLS"), None, "5.7.3"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_classified_refusals_say_what_bounce_they_are(
    exc: BaseException, kind: str | None, status: str | None
) -> None:
    err = classify_smtp_error(exc)
    assert isinstance(err, PermanentSendError)
    assert (err.bounce, err.status, err.hard_bounce) == (kind, status, kind == HARD)


def test_a_permanent_error_raised_without_a_kind_is_no_bounce() -> None:
    """Another transport (an ESP's API) that cannot tell says nothing about the address."""
    err = PermanentSendError("rejected", code=550)
    assert (err.bounce, err.status, err.hard_bounce) == (None, None, False)


# --- what real servers answer --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (lambda: Scripted(rcpt={"*": "550 5.1.1 <ann@example.com>: no such user"}), HARD),
        (lambda: Scripted(rcpt={"*": "550 no such user here"}), HARD),
        (lambda: Scripted(rcpt={"*": "550 5.2.1 this account is disabled"}), HARD),
        (lambda: Scripted(rcpt={"*": "552 5.2.2 mailbox full"}), SOFT),
        (lambda: Scripted(data="552 5.2.2 mailbox full"), SOFT),
        (lambda: Scripted(data="550 5.7.1 rejected as spam"), SOFT),
        (lambda: Scripted(data="554 transaction failed"), SOFT),
        (lambda: Scripted(mail="550 5.7.1 sender rejected"), None),
    ],
    ids=[
        "rcpt-511",
        "rcpt-550",
        "rcpt-521",
        "rcpt-522",
        "data-522",
        "data-571",
        "data-554",
        "mail",
    ],
)
async def test_real_refusals_are_classified(
    settings: Settings, handler: Callable[[], Scripted], kind: str | None
) -> None:
    h = handler()
    with aiosmtpd_server(h) as port, pytest.raises(PermanentSendError) as info:
        await _send(transport(settings, port))
    assert info.value.bounce == kind
    assert h.accepted == []


async def test_a_4xx_is_never_a_bounce(settings: Settings) -> None:
    with (
        aiosmtpd_server(Scripted(rcpt={"*": "452 4.2.2 mailbox full"})) as port,
        pytest.raises(TransientSendError) as info,
    ):
        await _send(transport(settings, port))
    assert not hasattr(info.value, "bounce")


# --- the suppression rule ------------------------------------------------------------------------


def _contact(engine: Engine, email: str = "ann@example.com") -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email)
        assert contact.id is not None
        return contact.id


def _bounce(
    engine: Engine,
    contact_id: int,
    kind: str,
    key: str,
    *,
    message_id: str | None = None,
    limit: int = 3,
    ago: timedelta = timedelta(0),
    recorded: list[int] | None = None,
) -> bool:
    with session_scope(engine) as s:
        return repository.record_bounce(
            s,
            contact_id=contact_id,
            kind=kind,  # type: ignore[arg-type]
            dedupe_key=key,
            soft_limit=limit,
            message_id=message_id if message_id is not None else key,
            source="test",
            properties={"code": 552},
            occurred_at=utcnow() - ago,
            recorded=recorded,
        )


def _status(engine: Engine, contact_id: int) -> ContactStatus:
    with session_scope(engine) as s:
        return repository.get_contact(s, contact_id).status


def _events(engine: Engine, contact_id: int) -> list[tuple[str, str]]:
    with session_scope(engine) as s:
        rows = s.exec(
            select(Event)
            .where(Event.contact_id == contact_id, col(Event.type).in_(["bounce", "complaint"]))
            .order_by(col(Event.id))
        ).all()
        return [(e.type, e.name) for e in rows]


def test_a_hard_bounce_suppresses_at_once_and_counts_once(any_engine: Engine) -> None:
    ann = _contact(any_engine)
    recorded: list[int] = []
    assert _bounce(any_engine, ann, "hard", "bounce:m1", recorded=recorded)
    assert _status(any_engine, ann) == ContactStatus.bounced
    assert len(recorded) == 1
    # the same report again (a retried activity, a webhook delivered twice): nothing changes
    assert not _bounce(any_engine, ann, "hard", "bounce:m1", recorded=recorded)
    assert len(recorded) == 1
    assert _events(any_engine, ann) == [("bounce", "hard")]


def test_soft_bounces_suppress_at_the_limit_only(any_engine: Engine) -> None:
    ann = _contact(any_engine)
    recorded: list[int] = []
    assert not _bounce(any_engine, ann, "soft", "m1", recorded=recorded)
    assert _status(any_engine, ann) == ContactStatus.subscribed
    assert not _bounce(any_engine, ann, "soft", "m2", recorded=recorded)
    assert _status(any_engine, ann) == ContactStatus.subscribed
    assert _bounce(any_engine, ann, "soft", "m3", recorded=recorded)
    assert _status(any_engine, ann) == ContactStatus.bounced
    assert not _bounce(any_engine, ann, "soft", "m4")  # already bounced
    assert len(recorded) == 3  # every new event, for the router to judge
    assert _events(any_engine, ann) == [("bounce", "soft")] * 4


def test_a_limit_of_one_suppresses_at_the_first_soft_bounce(any_engine: Engine) -> None:
    ann = _contact(any_engine)
    assert _bounce(any_engine, ann, "soft", "m1", limit=1)
    assert _status(any_engine, ann) == ContactStatus.bounced


def test_soft_bounce_reports_of_one_message_count_once(any_engine: Engine) -> None:
    """SMTP said 552 and the ESP's webhook reports the same message again: one bounce."""
    ann = _contact(any_engine)
    for key in ("smtp:m1", "esp:m1", "esp:m1:again", "smtp:m2"):
        message_id = key.split(":")[1]
        assert not _bounce(any_engine, ann, "soft", key, message_id=message_id)
    assert _status(any_engine, ann) == ContactStatus.subscribed
    assert _bounce(any_engine, ann, "soft", "smtp:m3", message_id="m3")


def test_an_open_or_click_since_resets_the_soft_count(any_engine: Engine) -> None:
    ann, bo = _contact(any_engine), _contact(any_engine, "bo@example.com")
    for who, kind in ((ann, "open"), (bo, "click")):
        _bounce(any_engine, who, "soft", f"{who}:m1", ago=timedelta(days=3))
        _bounce(any_engine, who, "soft", f"{who}:m2", ago=timedelta(days=2))
        with session_scope(any_engine) as s:
            repository.record_event(
                s,
                contact_id=who,
                type=kind,
                dedupe_key=f"{kind}:{who}",
                occurred_at=utcnow() - timedelta(days=1),
            )
        assert not _bounce(any_engine, who, "soft", f"{who}:m3")
        assert not _bounce(any_engine, who, "soft", f"{who}:m4")
        assert _status(any_engine, who) == ContactStatus.subscribed
        assert _bounce(any_engine, who, "soft", f"{who}:m5")


def test_soft_bounces_older_than_the_window_do_not_count(any_engine: Engine) -> None:
    ann = _contact(any_engine)
    old = repository.SOFT_BOUNCE_WINDOW + timedelta(days=1)
    _bounce(any_engine, ann, "soft", "m1", ago=old)
    _bounce(any_engine, ann, "soft", "m2", ago=old)
    assert not _bounce(any_engine, ann, "soft", "m3")
    assert not _bounce(any_engine, ann, "soft", "m4")
    assert _status(any_engine, ann) == ContactStatus.subscribed
    assert _bounce(any_engine, ann, "soft", "m5")


def test_soft_bounces_count_per_contact(any_engine: Engine) -> None:
    ann, bo = _contact(any_engine), _contact(any_engine, "bo@example.com")
    _bounce(any_engine, ann, "soft", "a1")
    _bounce(any_engine, ann, "soft", "a2")
    assert not _bounce(any_engine, bo, "soft", "b1")
    assert _status(any_engine, bo) == ContactStatus.subscribed


@pytest.mark.parametrize("before", list(ContactStatus))
def test_a_complaint_always_ends_complained(any_engine: Engine, before: ContactStatus) -> None:
    ann = _contact(any_engine)
    if before != ContactStatus.subscribed:
        with session_scope(any_engine) as s:
            repository.set_status(s, ann, before)
    changed = _bounce(any_engine, ann, "complaint", "fbl:1")
    assert changed == (before != ContactStatus.complained)
    assert _status(any_engine, ann) == ContactStatus.complained
    assert _events(any_engine, ann) == [("complaint", "")]


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_a_bounce_leaves_an_unsubscribed_contact_unsubscribed(
    any_engine: Engine, kind: str
) -> None:
    ann = _contact(any_engine)
    with session_scope(any_engine) as s:
        repository.set_status(s, ann, ContactStatus.unsubscribed)
    recorded: list[int] = []
    assert not _bounce(any_engine, ann, kind, "m1", limit=1, recorded=recorded)
    assert _status(any_engine, ann) == ContactStatus.unsubscribed
    assert _events(any_engine, ann) == [("bounce", kind)] and len(recorded) == 1


def test_bad_arguments_are_refused(any_engine: Engine) -> None:
    ann = _contact(any_engine)
    with pytest.raises(ValueError, match="kind"):
        _bounce(any_engine, ann, "bogus", "m1")
    with pytest.raises(ValueError, match="soft_limit"):
        _bounce(any_engine, ann, "soft", "m1", limit=0)
    assert _events(any_engine, ann) == []
