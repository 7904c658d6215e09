"""The campaign page's "journeys here now", for journeys the real engine runs: the engine writes
the step each running journey dwells at (``enrolments.current_step``), so the figure follows
them from step to step and every running journey is counted at a step of the plan."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from tests.engine_support import journeys, workspace_with
from tests.support import SmtpServer, api_client

HERE = """\
id: here
name: Here now
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello}
  - id: pause
    wait: {duration: 3d}
  - id: bye
    send_email: {template: tips, subject: Bye}
  - id: wait_for_click
    wait_for: {click: bye, timeout: 7d, on_event: done, on_timeout: done}
  - id: done
    exit:
"""
STEPS = ("hello", "pause", "bye", "wait_for_click", "done")


def here_now(html: str) -> dict[str, int]:
    """Each step's "here now" figure, and journeys with no step of the plan (``?``)."""
    figures = {}
    for step_id in STEPS:
        row = html[html.index(f'<tr data-step="{step_id}">') :]
        match = re.search(r'data-figure="here_now">([^<]*)<', row)
        assert match, f"no here_now for {step_id}"
        figures[step_id] = int(match.group(1).strip())
    unknown = re.search(r'data-figure="step_unknown">([^<]*)<', html)
    figures["?"] = int(unknown.group(1)) if unknown else 0
    return figures


async def test_here_now_follows_running_journeys_from_step_to_step(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, HERE)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        make_user(engine, "mia@example.com", "marketer")
        async with api_client(settings, workspace, engine, time_env.client) as http:
            assert (await sign_in(http, "mia@example.com")).status_code == 303

            async def figures() -> dict[str, int]:
                page = await http.get("/dashboard/campaigns/here")
                assert page.status_code == 200, page.text
                return here_now(page.text)

            people = [await d.form("newsletter", f"h{i}@example.com") for i in range(3)]
            await d.advance(timedelta(minutes=1))
            assert await figures() == {
                "hello": 0,
                "pause": 3,
                "bye": 0,
                "wait_for_click": 0,
                "done": 0,
                "?": 0,
            }

            await d.advance(timedelta(days=3, minutes=1))
            assert len(smtp.mailbox.messages) == 6
            await d.track("click", people[0], "bye")  # that one leaves; two keep waiting
            await d.result(d.enrolment(people[0], "here").workflow_id)
            assert await figures() == {
                "hello": 0,
                "pause": 0,
                "bye": 0,
                "wait_for_click": 2,
                "done": 0,
                "?": 0,
            }

            await d.finish(days=8)
            assert set((await figures()).values()) == {0}  # ended journeys are not here
