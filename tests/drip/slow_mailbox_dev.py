"""``drip dev`` with a slow mailbox, for tests that stop it while it sends: the mailbox stores each
message as usual, then holds its reply to DATA for ``SLOW_MAILBOX_SECONDS`` (a relay's latency),
the way ``tests.support.Mailbox.delay`` does for the test relay.

Run as ``python -m tests.drip.slow_mailbox_dev [drip options]`` with the checkout on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from aiosmtpd.smtp import SMTP

from drip.cli import app
from drip.mailbox import MailboxHandler

_store = MailboxHandler.handle_DATA


async def _slow_reply(self: MailboxHandler, server: SMTP, session: Any, envelope: Any) -> str:
    reply = await _store(self, server, session, envelope)
    await asyncio.sleep(float(os.environ.get("SLOW_MAILBOX_SECONDS", "1")))
    return reply


if __name__ == "__main__":
    MailboxHandler.handle_DATA = _slow_reply  # type: ignore[method-assign]
    sys.argv = ["drip", *sys.argv[1:], "dev"]
    app()
