"""Ctrl-C in ``drip dev`` while its worker holds slow sends loses none and sends none twice:
the transactions on the mailbox finish, the queued sends go back unsent, ``drip dev`` exits 0
within the worker's bound (plus its own stop), and the next ``drip dev`` sends the rest.

``drip dev`` runs as a process through ``tests/drip/slow_mailbox_dev.py``: the real dev stack,
with its mailbox holding each reply to DATA after storing the message (a relay's latency). Emails
are counted in the mailbox folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from contacts.db import create_db_engine, session_scope
from contacts.models import Message, MessageState
from drip.mailbox import list_messages
from tests.drip.test_dev_e2e import DevProcess
from tests.support import ROOT, copy_workspace, free_port

pytestmark = pytest.mark.e2e

SIGNUPS = 10
UNFINISHED = (MessageState.pending, MessageState.sending)
SHUTDOWN_SECONDS = 15
#: ``drip dev`` waits for its worker up to the bound plus 10 s, then stops the rest; and the
#: machine is shared and busy
SLACK = 40


def _finished(rows: list[Message]) -> bool:
    """Every sign-up's welcome has its row, each sent or given up on (none left to send)."""
    return len(rows) == SIGNUPS and all(r.state not in UNFINISHED for r in rows)


class _SlowDev(DevProcess):
    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.drip.slow_mailbox_dev", "--verbose"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

    def ctrl_c(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=SHUTDOWN_SECONDS + SLACK)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"drip dev did not stop within {SHUTDOWN_SECONDS + SLACK} s")


def _until(check: Callable[[], bool], what: str, output: Callable[[], str]) -> None:
    deadline = time.monotonic() + 120
    while not check():
        assert time.monotonic() < deadline, f"{what}:\n{output()}"
        time.sleep(0.05)


def test_ctrl_c_in_drip_dev_finishes_or_hands_back_every_send(tmp_path: Path) -> None:
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    home = tmp_path / ".drip"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "PYTHONPATH": str(ROOT),
        "DRIP_HOME": str(home),
        "DRIP_WORKSPACE": str(copy_workspace(tmp_path)),
        "DRIP_API_PORT": str(api_port),
        "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "DRIP_TEMPORAL_UI_PORT": str(free_port()),
        "DRIP_SMTP_PORT": str(free_port()),
        "DRIP_PUBLIC_BASE_URL": base,
        "DRIP_SMTP_MAX_CONNECTIONS": "2",
        "DRIP_WORKER_SHUTDOWN_SECONDS": str(SHUTDOWN_SECONDS),
        "DRIP_FORM_RATE_PER_MINUTE": "1000",
        "SLOW_MAILBOX_SECONDS": "1.5",
        "COLUMNS": "300",
    }
    people = [f"p{i}@example.com" for i in range(SIGNUPS)]
    dev = _SlowDev(tmp_path, env, tmp_path / "dev.log")
    engine = create_db_engine(f"sqlite:///{home / 'drip.db'}")

    def rows() -> list[Message]:
        with session_scope(engine) as s:
            return list(s.exec(select(Message)).all())

    def stored() -> int:
        return len(list_messages(home / "mailbox"))

    try:
        dev.start()
        dev.wait_until_serving(f"{base}/forms/newsletter")
        for email in people:
            r = httpx.post(
                f"{base}/forms/newsletter",
                json={"email": email, "first_name": "P", "consent": True},
                timeout=10,
            )
            assert r.status_code == 202, r.text
        # two messages in the mailbox (their replies held, or given), four more sends with their
        # outbox rows reserved and nothing in the mailbox yet: queued for a connection
        _until(
            lambda: stored() >= 2 and len(rows()) - stored() >= 4,
            "sends in the mailbox and queued behind them",
            dev.output,
        )
        assert dev.ctrl_c() == 0, dev.output()
        stopped = dev.output()

        dev.start()  # the next run picks up what the stopped one handed back
        dev.wait_until_serving(f"{base}/forms/newsletter")
        _until(
            lambda: _finished(rows()),
            "the next run sent what the stopped one did not",
            dev.output,
        )
        assert dev.ctrl_c() == 0, dev.output()
    finally:
        dev.kill()
        engine.dispose()
    sent = rows()
    assert sorted(r.state for r in sent) == [MessageState.sent] * SIGNUPS
    mailbox = list_messages(home / "mailbox")
    assert Counter(m.message_id for m in mailbox) == Counter({r.header_message_id: 1 for r in sent})
    assert sorted(m.to for m in mailbox) == sorted(people)
    assert "stopped sending:" in stopped, stopped  # what the first run's stop did
