"""What the tests of ``drip broadcasts`` and ``/api/broadcasts`` share: a workspace whose only
broadcasts are small ones written here, and an audience with its suppressed contacts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.broadcast_models import FINISHED, BroadcastSend, SendState
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus
from tests.support import copy_workspace
from workflows.broadcast_types import SET_STATE_ACTIVITY

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


async def held_by_its_pause(
    client: Client, engine: Engine, send_id: str, within: float = 60
) -> None:
    """Until a send paused before its first batch is held by the workflow itself: it has taken
    the snapshot, shown ``sending`` and then ``paused`` again (two ``broadcast_set_state``
    activities done, none pending), and waits for a resume. Before that, a resume could meet
    the moment the state reads ``sending`` and be refused, rightly."""
    handle = client.get_workflow_handle(send_id)
    deadline = time.monotonic() + within
    while True:
        events = (await handle.fetch_history()).events
        states = {
            e.event_id
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == SET_STATE_ACTIVITY
        }
        done = {
            e.activity_task_completed_event_attributes.scheduled_event_id
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        }
        if len(states) >= 2 and states <= done:
            await wait_for_send(engine, send_id, frozenset({SendState.paused}), snapshot=True)
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{send_id} was not held by its pause within {within} s")
        await asyncio.sleep(0.1)
