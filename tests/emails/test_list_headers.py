"""List-Id (RFC 2919) and Feedback-ID (Gmail's feedback loop): the values for campaigns and
broadcasts, what hostile names and ids become (one header each, never a new one), and that
DKIM signs both. The emails a real worker sends are checked in
``tests/workflows/test_list_headers_sent.py``."""

from __future__ import annotations

import email
import email.policy
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emails import RenderedEmail, build_message
from emails.dkim import DkimSigner
from emails.list_headers import broadcast_mailing, campaign_mailing, sender_id

DOMAIN = "acme.example"


def _message(list_id: str | None, feedback_id: str | None) -> bytes:
    rendered = RenderedEmail(
        subject="Hello",
        html="<p>Hello</p>",
        text="Hello",
        unsubscribe_url="https://mail.acme.example/u/token",
    )
    return build_message(
        rendered,
        from_addr="Acme <hello@acme.example>",
        to_addr="reader@example.com",
        reply_to=None,
        message_id="m-1",
        domain=DOMAIN,
        unsubscribe_mailto=None,
        list_id=list_id,
        feedback_id=feedback_id,
    )


def _headers(data: bytes) -> list[tuple[str, str]]:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return [(name, str(value)) for name, value in parsed.items()]


def test_a_campaign_and_a_broadcast_are_lists_of_their_own() -> None:
    journey = campaign_mailing("Acme Outdoor", DOMAIN, "welcome")
    assert journey.list_id == '"Acme Outdoor" <welcome.campaigns.acme.example>'
    assert journey.feedback_id("tips") == "welcome:welcome/tips:marketing.journey:acme.example"
    broadcast = broadcast_mailing("Acme Outdoor", DOMAIN, "black-friday")
    assert broadcast.list_id == '"Acme Outdoor" <black-friday.broadcasts.acme.example>'
    assert broadcast.feedback_id("b") == (
        "broadcast.black-friday:broadcast.black-friday/b:marketing.broadcast:acme.example"
    )


def test_transactional_mail_is_no_list_but_keeps_its_own_feedback_stream() -> None:
    receipt = campaign_mailing("Acme Outdoor", DOMAIN, "receipt", marketing=False)
    assert receipt.list_id is None
    assert receipt.feedback_id("sent") == (
        "receipt:receipt/sent:transactional.journey:acme.example"
    )


def test_no_two_fields_of_a_feedback_id_can_be_equal() -> None:
    """Gmail counts each identifier on its own, wherever it stands: a campaign named like a
    kind, or a step named like its campaign, must not merge their counts."""
    for campaign, step in [("journey", "journey"), ("broadcast", "welcome"), ("x", "x")]:
        fields = campaign_mailing("A", DOMAIN, campaign).feedback_id(step).split(":")
        assert len(fields) == 4 and len(set(fields)) == 4, fields
    fields = broadcast_mailing("A", DOMAIN, "journey").feedback_id("email").split(":")
    assert len(set(fields)) == 4 and fields[2] == "marketing.broadcast"
    # a campaign and a broadcast of the same id are different lists and streams
    c, b = campaign_mailing("A", DOMAIN, "news"), broadcast_mailing("A", DOMAIN, "news")
    assert c.list_id != b.list_id and c.what != b.what


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("acme.example", "acme.example"),
        ("a.io", "a.io-mail"),
        ("ACME.Example.", "acme.example"),
    ],
)
def test_the_sender_id_is_the_sending_domain_in_5_to_15_characters(
    domain: str, expected: str
) -> None:
    assert sender_id(domain) == expected


def test_a_long_sending_domain_gives_a_short_sender_id_that_still_tells_domains_apart() -> None:
    one = sender_id("newsletter.shop.acme-outdoor.co.uk")
    other = sender_id("newsletter.shop.acme-outdoors.co.uk")
    assert 5 <= len(one) <= 15 and 5 <= len(other) <= 15 and one != other
    assert sender_id("newsletter.shop.acme-outdoor.co.uk") == one  # stable


HOSTILE_NAME = 'Acme "Outdoor" \\ Ltd\r\nBcc: thief@evil.example\x00\x1b[31m'


def test_header_injection_in_the_workspace_name_and_ids_is_neutralised() -> None:
    mailing = campaign_mailing(HOSTILE_NAME, DOMAIN, "welcome\r\nBcc: thief@evil.example")
    feedback = mailing.feedback_id("step:1\nX-Evil: yes")
    data = _message(mailing.list_id, feedback)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = [n.lower() for n, _ in _headers(data)]
    assert "bcc" not in names and "x-evil" not in names
    assert names.count("list-id") == names.count("feedback-id") == 1
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", head.replace("\r\n", ""))
    headers = dict(_headers(data))
    # the name survives as text (quotes escaped, controls gone), the ids as safe labels
    assert headers["List-Id"] == (
        '"Acme \\"Outdoor\\" \\\\ Ltd Bcc: thief@evil.example [31m" '
        "<welcome-bcc-thief-evil-example.campaigns.acme.example>"
    )
    fields = headers["Feedback-ID"].split(":")
    assert len(fields) == 4
    assert fields[1] == "welcome-bcc-thief-evil-example/step-1-x-evil-yes"
    assert all(re.fullmatch(r"[a-z0-9._/-]+", f) for f in fields)


def test_a_non_ascii_workspace_name_is_encoded_and_reads_back() -> None:
    mailing = broadcast_mailing("Café Montaña · Ñandú", DOMAIN, "news")
    assert mailing.list_id is not None and mailing.list_id.isascii()
    data = _message(mailing.list_id, mailing.feedback_id("email"))
    assert dict(_headers(data))["List-Id"] == (
        "Café Montaña · Ñandú <news.broadcasts.acme.example>"
    )


def test_long_names_and_ids_are_cut_to_the_limits_and_stay_distinct() -> None:
    long_id = "x" * 80
    one = campaign_mailing("N" * 300, DOMAIN, long_id)
    two = campaign_mailing("N" * 300, DOMAIN, long_id[:-1] + "y")
    assert one.list_id is not None and two.list_id is not None
    ident = one.list_id.rsplit("<", 1)[1].rstrip(">")
    assert len(ident) <= 255 and len(ident.split(".")[0]) <= 63
    assert one.list_id != two.list_id
    assert one.feedback_id("s" * 80) != two.feedback_id("s" * 80)
    assert all(len(f) <= 64 for f in one.feedback_id("s" * 80).split(":"))
    data = _message(one.list_id, one.feedback_id("s" * 80))
    # within SMTP's 998 (a Feedback-ID has no space to fold at), and read back whole
    assert max(len(line) for line in data.split(b"\r\n")) < 300
    headers = dict(_headers(data))
    assert headers["Feedback-ID"] == one.feedback_id("s" * 80)
    assert headers["List-Id"] == one.list_id


@pytest.mark.parametrize(
    "value",
    [
        "<a.example>\r\nBcc: x@evil.example",
        "<a.example>\nBcc: x",
        "caf\u00e9 <a.example>",
        "a\x00b",
    ],
)
def test_build_message_refuses_a_list_header_value_that_could_break_out(value: str) -> None:
    with pytest.raises(ValueError):
        _message(value, None)
    with pytest.raises(ValueError):
        _message(None, value)


def test_without_a_mailing_the_message_has_neither_header() -> None:
    names = [n.lower() for n, _ in _headers(_message(None, None))]
    assert "list-id" not in names and "feedback-id" not in names


def test_dkim_signs_both_so_neither_can_be_added_or_changed() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = DkimSigner(domain=DOMAIN, selector="drip", private_key_pem=pem)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return signer.dns_record().encode() if name == b"drip._domainkey.acme.example." else None

    mailing = campaign_mailing("Acme Outdoor", DOMAIN, "welcome")
    signed = signer.sign(_message(mailing.list_id, mailing.feedback_id("welcome")))
    assert dkim.verify(signed, dnsfunc=lookup)
    h = re.search(rb"\bh=([^;]+);", signed.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b""))
    assert h is not None
    listed = [n.strip().lower() for n in h.group(1).split(b":")]
    assert b"list-id" in listed and b"feedback-id" in listed
    changed = signed.replace(b"marketing.journey", b"marketing.jowrney")
    assert not dkim.verify(changed, dnsfunc=lookup)
    # a message signed without them cannot have them added later (signed as absent)
    bare = signer.sign(_message(None, None))
    added = bare.replace(b"\r\n\r\n", b"\r\nFeedback-ID: a:b:c:evil.example\r\n\r\n", 1)
    assert dkim.verify(bare, dnsfunc=lookup) and not dkim.verify(added, dnsfunc=lookup)
