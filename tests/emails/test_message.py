"""build_message: RFC 5322 headers, RFC 8058 one-click unsubscribe, text before HTML, and bytes
that any SMTP server accepts."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, MIMEPart
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.workspace import Workspace
from contacts.models import Contact
from emails import RenderedEmail, build_message, domain_of
from tests.emails.conftest import RenderFn

UNSUB = "https://drip.acme.example/u/AAAAAAAAAAEEipQ4fDLXV2ZgtyHBaT9H"


def _rendered(**overrides: Any) -> RenderedEmail:
    values: dict[str, Any] = {
        "subject": "Hello",
        "html": "<html><body><p>Hello <b>there</b></p></body></html>",
        "text": "Hello there\n",
        "unsubscribe_url": UNSUB,
    }
    values.update(overrides)
    return RenderedEmail(**values)


def _build(rendered: RenderedEmail | None = None, **overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "from_addr": "Acme Outdoor <hello@acme.example>",
        "to_addr": "ann@example.com",
        "reply_to": "Acme Support <support@acme.example>",
        "message_id": "0b0e5a53-3f1f-4c55-9d8f-0d2b8f4a1c11",
        "domain": "acme.example",
        "unsubscribe_mailto": "unsubscribe@acme.example",
    }
    kwargs.update(overrides)
    return build_message(rendered or _rendered(), **kwargs)


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _content(part: MIMEPart) -> str:
    """A part's decoded text with newlines as Python writes them (MIME's canonical form is CRLF)."""
    return str(part.get_content()).replace("\r\n", "\n")


def _raw_header(data: bytes, name: str) -> str:
    """A header exactly as on the wire (unfolded), without decoding encoded words."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n[ \t]", " ", head)
    found = [line.split(":", 1)[1].strip() for line in unfolded.split("\r\n")
             if line.lower().startswith(name.lower() + ":")]  # fmt: skip
    assert len(found) == 1, (name, found)
    return found[0]


def test_headers_round_trip() -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    data = _build(date=when)
    msg = _parse(data)
    assert msg["Message-ID"] == "<0b0e5a53-3f1f-4c55-9d8f-0d2b8f4a1c11@acme.example>"
    assert msg["From"] == "Acme Outdoor <hello@acme.example>"
    assert msg["From"].addresses[0].addr_spec == "hello@acme.example"
    assert msg["To"] == "ann@example.com"
    assert msg["Reply-To"] == "Acme Support <support@acme.example>"
    assert msg["Subject"] == "Hello"
    assert msg["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(str(msg["Date"])) == when
    assert msg.defects == []


def test_date_defaults_to_now_and_must_be_aware() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    msg = _parse(_build())
    after = datetime.now(UTC)
    assert before <= parsedate_to_datetime(str(msg["Date"])) <= after
    cest = timezone(timedelta(hours=2))
    msg = _parse(_build(date=datetime(2026, 6, 1, 12, 0, tzinfo=cest)))
    assert str(msg["Date"]).endswith("+0200")
    with pytest.raises(ValueError, match="timezone-aware"):
        _build(date=datetime(2026, 6, 1, 12, 0))


def test_no_reply_to_when_not_configured() -> None:
    assert _parse(_build(reply_to=None))["Reply-To"] is None


@pytest.mark.parametrize(
    "subject",
    [
        "Grüße aus Köln — Ümläute & ✓ 🥾",
        "日本語の件名",
        "Wanderung: " + "sehr lange Überschrift " * 12,
    ],
)
def test_non_ascii_subject_survives(subject: str) -> None:
    data = _build(_rendered(subject=subject))
    assert data.isascii()  # encoded words, no 8-bit headers
    assert _parse(data)["Subject"] == subject


def test_non_ascii_display_names() -> None:
    msg = _parse(
        _build(from_addr="Zoë Çafé Ünïcode <hello@acme.example>", to_addr="Zoë <z@x.example>")
    )
    assert msg["From"].addresses[0].display_name == "Zoë Çafé Ünïcode"
    assert msg["To"].addresses[0].addr_spec == "z@x.example"


def test_one_click_unsubscribe_headers() -> None:
    data = _build()
    msg = _parse(data)
    expected = f"<{UNSUB}>, <mailto:unsubscribe@acme.example?subject=unsubscribe>"
    assert str(msg["List-Unsubscribe"]).strip() == expected
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # as a receiver that does not decode RFC 2047 in this structured header sees it
    assert _raw_header(data, "List-Unsubscribe") == expected


def test_mailto_prefix_is_not_doubled() -> None:
    msg = _parse(_build(unsubscribe_mailto="mailto:unsubscribe@acme.example"))
    assert "<mailto:unsubscribe@acme.example?subject=unsubscribe>" in msg["List-Unsubscribe"]
    assert "mailto:mailto:" not in msg["List-Unsubscribe"]


def test_unsubscribe_without_mailto() -> None:
    data = _build(unsubscribe_mailto=None)
    assert _raw_header(data, "List-Unsubscribe") == f"<{UNSUB}>"
    assert _parse(data)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_long_unsubscribe_url_stays_readable() -> None:
    """A long public base URL must not push the URL into an RFC 2047 encoded word, which
    receivers do not decode in List-Unsubscribe (the one-click button would disappear)."""
    long_url = "https://links.newsletter.acme-outdoor-example.co.uk/drip/u/" + "A" * 32
    data = _build(_rendered(unsubscribe_url=long_url))
    raw = _raw_header(data, "List-Unsubscribe")
    assert "=?" not in raw
    assert raw == f"<{long_url}>, <mailto:unsubscribe@acme.example?subject=unsubscribe>"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_no_unsubscribe_headers_without_url() -> None:
    msg = _parse(_build(_rendered(unsubscribe_url="")))
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None


def test_multipart_alternative_text_first() -> None:
    msg = _parse(_build())
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert _content(parts[0]) == "Hello there\n"
    assert _content(parts[1]).strip() == "<html><body><p>Hello <b>there</b></p></body></html>"
    # what a mail client picks
    html = msg.get_body(("html",))
    assert html is not None and "<b>there</b>" in _content(html)


def test_long_lines_are_wrapped_within_smtp_limits() -> None:
    html = "<html><body>" + "<p>" + ("é🥾x" * 3000) + "</p>" + "y" * 5000 + "</body></html>"
    text = "word " * 2000 + "\n" + "z" * 3000 + "\n"
    data = _build(_rendered(html=html, text=text, subject="s " * 300))
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only, no bare LF
    assert b"\r" not in data.replace(b"\r\n", b"")
    msg = _parse(data)
    parts = list(msg.iter_parts())
    assert _content(parts[0]) == text
    assert _content(parts[1]).rstrip("\n") == html


def test_rendered_email_becomes_a_message(
    render: RenderFn, ann: Contact, workspace: Workspace
) -> None:
    rendered = render("welcome", ann, message_id="7e5a")
    data = build_message(
        rendered,
        from_addr=workspace.config.from_,
        to_addr=ann.email,
        reply_to=workspace.config.reply_to,
        message_id="7e5a",
        domain=domain_of(workspace.config.from_),
        unsubscribe_mailto=workspace.config.unsubscribe_mailto,
    )
    msg = _parse(data)
    assert msg["Message-ID"] == "<7e5a@acme.example>"
    assert msg["Subject"] == "Welcome to Acme Outdoor, Ann"
    assert f"<{rendered.unsubscribe_url}>" in msg["List-Unsubscribe"]
    text, html = (_content(p) for p in msg.iter_parts())
    assert text == rendered.text
    assert html.rstrip("\n") == rendered.html.rstrip("\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    ("message_id", "domain"),
    [
        ("", "acme.example"),
        ("a b", "acme.example"),
        ("a>b", "acme.example"),
        ("a<b", "acme.example"),
        ("a@b", "acme.example"),
        ("a\r\nBcc: x@example.com", "acme.example"),
        ("ok", ""),
        ("ok", "acme example"),
        ("ok", "acme.example>"),
        ("ok", "acme.example\n"),
        ("ünï", "acme.example"),
    ],
)
def test_invalid_message_ids_are_refused(message_id: str, domain: str) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        _build(message_id=message_id, domain=domain)


def test_same_message_id_across_retries() -> None:
    first = _parse(_build(date=datetime(2026, 1, 1, tzinfo=UTC)))
    retry = _parse(_build(date=datetime(2026, 1, 2, tzinfo=UTC)))
    assert first["Message-ID"] == retry["Message-ID"]


def test_a_retry_is_byte_for_byte_the_same_message() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert _build(date=when) == _build(date=when)
    boundary = _parse(_build(date=when)).get_boundary()
    assert boundary is not None and boundary.startswith("=_drip_")
    assert _parse(_build(message_id="other", date=when)).get_boundary() != boundary


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("hello@acme.example", "acme.example"),
        ("Acme Outdoor <hello@ACME.Example>", "acme.example"),
        ('"Doe, Jane" <jane@mail.example.org>', "mail.example.org"),
    ],
)
def test_domain_of(address: str, domain: str) -> None:
    assert domain_of(address) == domain


@pytest.mark.parametrize("address", ["", "acme.example", "Acme <>", "@acme.example", "hello@"])
def test_domain_of_refuses_non_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="not an email address"):
        domain_of(address)


#: Subjects as the renderer hands them over: one line, single spaces, no control characters.
_subjects = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=300).map(
    lambda s: " ".join(s.split())
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_subjects)
def test_any_subject_round_trips_within_line_limits(subject: str) -> None:
    data = _build(_rendered(subject=subject))
    assert data.isascii()
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    folded = head[head.index("Subject:") :].split("\r\nList-Unsubscribe:")[0].split("\r\n")
    # encoded words fit in 78; only a single word longer than a line may exceed it
    assert all(len(line) <= 78 or " " not in line.strip() for line in folded)
    assert _parse(data)["Subject"] == subject


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=3000), html=st.text(max_size=3000))
def test_any_body_round_trips(text: str, html: str) -> None:
    data = _build(_rendered(text=text, html=html))
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    parts = list(_parse(data).iter_parts())
    # MIME bodies are lines: every line end becomes CRLF, and a lone CR is a line end too
    canonical = [v.replace("\r\n", "\n").replace("\r", "\n") for v in (text, html)]
    assert [_content(p).rstrip("\n") for p in parts] == [v.rstrip("\n") for v in canonical]


def test_ascii_that_looks_like_an_encoded_word_is_encoded() -> None:
    subject = "Try =?utf-8?q?this?= trick"
    data = _build(_rendered(subject=subject))
    assert _parse(data)["Subject"] == subject
    assert "=?utf-8?q?this?=" not in _raw_header(data, "Subject")


def test_long_ascii_subject_is_folded_at_spaces() -> None:
    subject = "Your weekly trail notes: " + "ridge walks and river crossings " * 6
    subject = subject.strip()
    data = _build(_rendered(subject=subject))
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    folded = head[head.index("Subject:") :].split("\r\nList-Unsubscribe:")[0].split("\r\n")
    assert len(folded) > 1 and max(len(line) for line in folded) <= 78
    assert _raw_header(data, "Subject") == subject
    assert _parse(data)["Subject"] == subject


@pytest.mark.parametrize("field", ["to_addr", "from_addr", "reply_to"])
def test_header_injection_through_an_address_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match="one line"):
        _build(**{field: "ann@example.com\r\nBcc: everyone@example.com"})


def test_subject_with_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="one line"):
        _build(_rendered(subject="Hi\r\nBcc: everyone@example.com"))


@pytest.mark.parametrize(
    ("subject", "shown"),
    [
        ("Hi \x00Ann", "Hi Ann"),
        ("Hi \x1b[31mAnn", "Hi [31mAnn"),
        ("Grüße\x7f \x85Ann", "Grüße Ann"),
        ("Hi\tAnn", "Hi Ann"),
    ],
)
def test_a_subject_never_carries_a_control_character(subject: str, shown: str) -> None:
    """Whatever a template rendered (a NUL from an old contact's name once went out inside an
    encoded word), the header carries no control character, raw or encoded."""
    data = _build(_rendered(subject=subject))
    raw = _raw_header(data, "Subject")
    assert not re.search(r"=(0[0-9A-F]|1[0-9A-F]|7F|C2=8[0-9A-F]|C2=9[0-9A-F])", raw), raw
    assert _parse(data)["Subject"] == shown


@pytest.mark.parametrize("field", ["to_addr", "from_addr", "reply_to"])
def test_an_address_header_with_a_control_character_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        _build(**{field: "Ann\x00 <ann@example.com>"})


def test_ascii_parts_with_short_lines_go_as_they_are() -> None:
    data = _build(_rendered(text="Hello there\n", html="<p>Hello <b>there</b></p>\n"))
    parts = list(_parse(data).iter_parts())
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["7bit", "7bit"]
    assert b"\r\n<p>Hello <b>there</b></p>\r\n" in data


@pytest.mark.parametrize(
    ("html", "why"),
    [("<p>Zo\u00eb</p>", "not ASCII"), ("<p>" + "x" * 995 + "</p>", "a line too long for SMTP")],
)
def test_other_parts_are_quoted_printable(html: str, why: str) -> None:
    data = _build(_rendered(html=html))
    text_part, html_part = _parse(data).iter_parts()
    assert text_part["Content-Transfer-Encoding"] == "7bit"
    assert html_part["Content-Transfer-Encoding"] == "quoted-printable", why
    assert _content(html_part).rstrip("\n") == html
