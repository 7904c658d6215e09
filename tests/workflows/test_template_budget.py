"""The template budget holds in the worker: a campaign whose template wedges its render (a loop
that never prints, a C-level blow-up) fails that send with the budget's reason within the
budget, the worker keeps sending the other journeys' emails, and stops cleanly, with no thread
left rendering. A real worker on Temporal's time-skipping server, a real SMTP server."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts.models import MessageState
from drip.settings import Settings
from tests.engine_support import Journeys, journeys, workspace_with
from tests.support import SmtpServer

NEWS = """\
id: news
name: News
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello}
"""
SPIN = """\
id: spin
name: Spin
trigger: {form: newsletter}
steps:
  - id: spun
    send_email: {template: spin, subject: Spin}
"""
BOMB = """\
id: bomb
name: Bomb
trigger: {form: newsletter}
steps:
  - id: bombed
    send_email: {template: bomb, subject: Bomb}
"""
#: pure Python: 10**10 turns of a loop that prints nothing; only the deadline stops it
SPIN_MJML = (
    "<mj-section><mj-column><mj-text>\n"
    "{% for a in 'x'|center(100000) %}{% for b in 'x'|center(100000) %}{% endfor %}{% endfor %}\n"
    "</mj-text></mj-column></mj-section>\n"
)
#: one C-level operation that would hold the GIL for minutes and take gigabytes
BOMB_MJML = (
    "<mj-section><mj-column><mj-text>\n"
    "{{ '%0999999999d' % 1 }}\n"
    "</mj-text></mj-column></mj-section>\n"
)
ANN = "ann@example.com"


def _rendering_threads() -> list[str]:
    """Threads whose stack is inside a Jinja template right now."""
    busy = []
    for thread_id, frame in sys._current_frames().items():
        walk = frame
        while walk is not None:
            if "__jinja_template__" in walk.f_globals:
                busy.append(str(thread_id))
                break
            walk = walk.f_back
    return busy


async def _until_final(d: Journeys, contact_id: int, step_id: str, within: float = 60) -> None:
    """Wait (real time) until the email of ``step_id`` has left ``pending``/``sending``."""
    deadline = time.monotonic() + within
    while True:
        rows = d.messages(contact_id, step_id)
        if rows and rows[-1].state not in (MessageState.pending, MessageState.sending):
            return
        assert time.monotonic() < deadline, f"{step_id}: {rows[-1].state if rows else None}"
        await asyncio.sleep(0.05)


async def test_a_wedged_render_fails_its_send_and_the_worker_carries_on(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = workspace_with(tmp_path, NEWS).root
    (root / "emails" / "spin.mjml").write_text(SPIN_MJML)
    (root / "emails" / "bomb.mjml").write_text(BOMB_MJML)
    for campaign in (SPIN, BOMB):
        (root / "campaigns" / f"{campaign.split()[1]}.yaml").write_text(campaign)
    workspace = load_workspace(root)
    budget = settings.model_copy(update={"template_render_seconds": 1.0})
    async with journeys(time_env, budget, engine, workspace, smtp.mailbox) as d:
        ann = await d.form("newsletter", ANN)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        for step in ("spun", "bombed", "hello"):
            await _until_final(d, ann, step)
        spun, bombed = d.message(ann, "spun"), d.message(ann, "bombed")
        rendering_at_stop = _rendering_threads()
    # the worker has stopped, and no thread is left inside a template
    assert rendering_at_stop == []
    assert _rendering_threads() == []
    assert smtp.mailbox.subjects() == ["Hello"]
    assert d.message(ann, "hello").state == MessageState.sent
    assert (spun.state, spun.attempts) == (MessageState.failed, 0)  # never reached SMTP
    assert spun.error is not None
    assert "render took over 1s and was stopped (DRIP_TEMPLATE_RENDER_SECONDS)" in spun.error
    assert (bombed.state, bombed.attempts) == (MessageState.failed, 0)
    assert bombed.error is not None
    assert "%-format width or precision 999999999 is too large" in bombed.error
    assert "DRIP_TEMPLATE_OUTPUT_CHARS" in bombed.error


async def test_stopping_the_worker_during_a_wedged_render(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """The worker is stopped while the render spins: it stops, and the render's thread ends
    with the budget instead of spinning on in a process that should have exited."""
    root = workspace_with(tmp_path).root
    (root / "emails" / "spin.mjml").write_text(SPIN_MJML)
    (root / "campaigns" / "spin.yaml").write_text(SPIN)
    workspace = load_workspace(root)
    budget = settings.model_copy(update={"template_render_seconds": 1.0})
    async with journeys(time_env, budget, engine, workspace, smtp.mailbox) as d:
        ann = await d.form("newsletter", ANN)
        deadline = time.monotonic() + 60
        while not _rendering_threads():
            assert time.monotonic() < deadline, "the render never started"
            await asyncio.sleep(0.01)
    deadline = time.monotonic() + 60
    while _rendering_threads():
        assert time.monotonic() < deadline, "a render thread outlived the worker"
        await asyncio.sleep(0.05)
    assert smtp.mailbox.messages == []
    assert d.message(ann, "spun").state in (MessageState.pending, MessageState.failed)
