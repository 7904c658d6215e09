"""Every email of the example workspace, built as the send_email activity builds it: text part,
postal address, pixel, tracked links, and the headers RFC 5322 and RFC 8058 ask for."""

from __future__ import annotations

import email
import email.policy
import html
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from campaigns.workspace import Workspace, load_workspace
from contacts.hits import TRAP_URL
from contacts.models import Contact
from drip.settings import Settings
from emails import Renderer, build_message, domain_of
from tests.support import EXAMPLES

BASE = "https://mail.acme.example"
HREF = re.compile(r"""<a\b[^>]*?\bhref="([^"]*)\"""", re.IGNORECASE)
CONTACT = Contact(
    id=4817,
    email="ann.walker@example.com",
    fields={
        "first_name": "Zoë",
        "interest": "hiking",
        "company": "Walker & Daughters",
        "webinar_at": "2026-12-01T18:00:00+00:00",
    },
)


def _sends() -> list[tuple[str, str, Any]]:
    workspace = load_workspace(EXAMPLES)
    return [
        (campaign.id, step.id, step.send_email)
        for campaign in workspace.campaigns.values()
        for step in campaign.steps
        if step.send_email is not None
    ]


SENDS = _sends()


@pytest.fixture(scope="module")
def example() -> Workspace:
    return load_workspace(EXAMPLES)


def _build(
    workspace: Workspace,
    settings: Settings,
    campaign_id: str,
    step_id: str,
    send: Any,
    when: datetime,
) -> tuple[Any, bytes]:
    plan = workspace.plans[campaign_id]
    renderer = Renderer(workspace, settings)
    message_id = "4b0c1f7e-2a4d-4f3e-9c55-0d1e2f3a4b5c"
    rendered = renderer.render(
        template=send.template,
        subject=send.subject,
        preheader=send.preheader,
        contact=CONTACT,
        message_id=message_id,
        campaign_id=campaign_id,
        step_id=step_id,
        track=send.track,
        utm=plan.utm_for(step_id),
    )
    config = workspace.config
    data = build_message(
        rendered,
        from_addr=send.from_ or config.from_,
        to_addr=CONTACT.email,
        reply_to=send.reply_to or config.reply_to,
        message_id=message_id,
        domain=domain_of(config.from_),
        unsubscribe_mailto=config.unsubscribe_mailto,
        date=when,
    )
    return rendered, data


def test_the_examples_send_emails() -> None:
    assert len(SENDS) >= 15


@pytest.mark.parametrize(
    ("campaign_id", "step_id", "send"), SENDS, ids=[f"{c}/{s}" for c, s, _ in SENDS]
)
def test_every_example_email_is_complete(
    example: Workspace, settings: Settings, campaign_id: str, step_id: str, send: Any
) -> None:
    settings = settings.model_copy(update={"public_base_url": BASE})
    first = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    rendered, data = _build(example, settings, campaign_id, step_id, send, first)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage) and msg.defects == []

    # headers
    for name in ("Date", "Message-ID", "From", "To", "Subject", "MIME-Version"):
        assert msg[name], name
    assert msg["To"] == CONTACT.email
    assert msg["Subject"] == rendered.subject and "{{" not in rendered.subject
    assert str(msg["List-Unsubscribe"]).startswith(f"<{BASE}/u/")
    assert "<mailto:unsubscribe@acme.example?subject=unsubscribe>" in msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998

    # parts: text first, then HTML
    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    text = str(text_part.get_content())
    page = str(html_part.get_content())
    postal = example.config.postal_address
    assert postal in text and postal in page
    assert len(text.split()) > 30  # a real text part, not a stub
    # MJML's long lines are folded at tags, and the contact's non-ASCII name is written as
    # character references, so an ASCII template needs no transfer encoding
    source = example.templates[send.template].read_text(encoding="utf-8")
    if source.isascii():
        assert html_part["Content-Transfer-Encoding"] == "7bit"

    # tracking: a pixel, and every web link either tracked or one of our own pages
    if send.track:
        assert page.count(f"{BASE}/t/o/") == 1
        assert rendered.links, "an example email with no tracked link"
        for href in (html.unescape(h) for h in HREF.findall(page)):
            if href.startswith(("http://", "https://")):
                assert href.startswith((f"{BASE}/t/c/", f"{BASE}/u/", f"{BASE}/m/")), href
        for token, _, url in rendered.links:
            if url == TRAP_URL:  # the layout's hidden trap link: not in the text part
                assert f"{BASE}/t/c/{token}" not in text
                continue
            assert f"{BASE}/t/c/{token}" in text  # the text part's links are tracked too
    assert f"Unsubscribe ({rendered.unsubscribe_url})" in text

    # a retry, later: the same Message-ID (and body)
    _, again = _build(
        example, settings, campaign_id, step_id, send, datetime(2026, 11, 24, tzinfo=UTC)
    )
    retry = email.message_from_bytes(again, policy=email.policy.default)
    assert retry["Message-ID"] == msg["Message-ID"]
    assert retry["Date"] != msg["Date"]
    assert again.split(b"\r\n\r\n", 1)[1] == data.split(b"\r\n\r\n", 1)[1]
