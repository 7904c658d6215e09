"""What the tests of ``drip broadcasts`` and ``/api/broadcasts`` share: a workspace whose only
broadcasts are small ones written here, and an audience with its suppressed contacts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.broadcast_models import FINISHED, BroadcastSend, SendState
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus
from tests.support import copy_workspace

#: everyone tagged "news" (the unsubscribed one among them is counted as suppressed)
HELLO = """\
id: hello
name: Hello everyone
email:
  template: welcome
  subject: "Hello {{ contact.first_name | default('there') }}"
audience: 'has_tag("news")'
"""

#: an A/B test of two subjects on a fifth of every contact, the winner an hour later
AB = """\
id: ab
name: Two subjects
email:
  template: welcome
  subject: "Plain subject"
ab_test:
  sample: 20
  wait: 1h
  variants:
    - id: plain
      subject: "Plain subject"
    - id: named
      subject: "{{ contact.first_name }}, a subject of your own"
"""

#: the same audience at a pace a test can pause and cancel mid-send (with small batches)
SLOW = """\
id: slow
name: Slow hello
email:
  template: welcome
  subject: "Slowly, {{ contact.first_name | default('there') }}"
audience: 'has_tag("news")'
rate: 10
"""


def broadcast_workspace(tmp_path: Path, **broadcasts: str) -> Workspace:
    """The demo workspace with ``broadcasts`` (id -> YAML) instead of its own."""
    root = copy_workspace(tmp_path)
    folder = root / "broadcasts"
    for old in folder.glob("*.yaml"):
        old.unlink()
    folder.mkdir(exist_ok=True)
    for bid, text in broadcasts.items():
        (folder / f"{bid}.yaml").write_text(text)
    return load_workspace(root)


def add_audience(engine: Engine, count: int) -> list[str]:
    """``count`` subscribed contacts tagged news (returned, in order), plus one unsubscribed
    with the tag and one subscribed without it, whom no send may reach."""
    emails = [f"reader{i:02d}@example.com" for i in range(count)]
    with session_scope(engine) as s:
        for i, email in enumerate(emails):
            contact, _ = repository.upsert_contact(
                s, email, {"first_name": f"Reader{i:02d}"}, consent_source="test"
            )
            contact.tags = ["news"]
            s.add(contact)
        gone, _ = repository.upsert_contact(s, "gone@example.com", consent_source="test")
        gone.tags = ["news"]
        gone.status = ContactStatus.unsubscribed
        s.add(gone)
        repository.upsert_contact(s, "other@example.com", consent_source="test")
    return emails


def contact_count(engine: Engine) -> int:
    with session_scope(engine) as s:
        return len(s.exec(select(Contact)).all())


async def wait_for_send(
    engine: Engine,
    send_id: str,
    states: frozenset[SendState] = FINISHED,
    *,
    snapshot: bool = False,
    within: float = 60,
) -> BroadcastSend:
    """The send's row once its state is one of ``states`` (and, with ``snapshot``, its
    audience has been taken)."""
    deadline = time.monotonic() + within
    while True:
        with session_scope(engine) as s:
            row = s.get(BroadcastSend, send_id)
            if (
                row is not None
                and row.state in states
                and (row.audience is not None or not snapshot)
            ):
                s.expunge(row)
                return row
            state = None if row is None else row.state
        if time.monotonic() > deadline:
            raise AssertionError(f"{send_id} is {state}, not one of {sorted(states)}")
        await asyncio.sleep(0.1)
