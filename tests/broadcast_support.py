"""A broadcast's email as the broadcast engine leaves it in the outbox, for tracking and routing
tests that need one without running a send: ``campaign_id`` ``broadcast:<id>``, the A/B variant
(or ``email``) as step, the send ``broadcast:<id>:<n>`` as workflow, key ``<send>:<contact>``,
state ``sent``, with its pixel token and tracked links stored."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.engine import Engine

from contacts import outbox
from contacts.db import session_scope
from contacts.models import Message, MessageState, utcnow
from emails.links import click_token, open_token

__all__ = ["URLS", "sent_email"]

URLS = ["https://acme.example/black-friday", "https://acme.example/boots"]


def sent_email(
    engine: Engine,
    secret: bytes,
    contact_id: int,
    *,
    campaign_id: str = "broadcast:black-friday",
    step_id: str = "b",
    workflow_id: str = "broadcast:black-friday:1",
    sent_ago: timedelta = timedelta(minutes=5),
) -> Message:
    """A sent outbox row with tracked links (``URLS``); a journey's when ``campaign_id`` names
    a campaign (then ``workflow_id`` should be the journey's)."""
    message_id = str(uuid.uuid4())
    broadcast = campaign_id.startswith("broadcast:")
    key = f"{workflow_id}:{contact_id}" if broadcast else f"{workflow_id}/{step_id}"
    with session_scope(engine) as s:
        outbox.reserve_message(
            s,
            Message(
                id=message_id,
                key=key,
                contact_id=contact_id,
                campaign_id=campaign_id,
                campaign_version=workflow_id.rsplit(":", 1)[-1] if broadcast else "",
                step_id=step_id,
                workflow_id=workflow_id,
                template="newsletter-december",
                header_message_id=f"<{message_id}@acme.example>",
                open_token=open_token(secret, message_id),
                created_at=utcnow() - sent_ago,
            ),
        )
        outbox.finish_send(s, message_id, MessageState.sent)
        links = [(click_token(secret, message_id, i), i, u) for i, u in enumerate(URLS)]
        outbox.store_links(s, message_id, links)
        message = s.get(Message, message_id)
        assert message is not None
        message.sent_at = utcnow() - sent_ago
        s.add(message)
        s.flush()
        s.expunge(message)
        return message
