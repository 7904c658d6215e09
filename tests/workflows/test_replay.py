"""Recorded histories of real journeys replay against today's workflow code.

A change that would make a running journey take a different path (without ``workflow.patched``)
fails here instead of in production.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.workflows.recording import HISTORIES
from workflows.broadcast import BroadcastWorkflow
from workflows.followup import LeadAlertWorkflow
from workflows.journey import JourneyWorkflow
from workflows.transactional import TransactionalEmail
from workflows.types import JourneyInput, JourneyResult

RECORDED = sorted(HISTORIES.glob("*.json"))


def _load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


def test_histories_are_recorded() -> None:
    names = {p.stem for p in RECORDED}
    assert {"welcome-opened", "welcome-not-opened"} <= names, names
    assert {"lead-alert-escalated", "lead-alert-acknowledged"} <= names, names
    assert {"broadcast-ab", "broadcast-continued"} <= names, names
    # recorded by tests/e2e/test_domain_pacing.py: a later round, a warm-up's held journey
    assert {"broadcast-held-round", "warm-up-held"} <= names, names
    # recorded by tests/workflows/test_transactional.py: a send, a domain's wait, a send
    assert "transactional-deferred" in names, names


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_recorded_history_replays(path: Path) -> None:
    history = _load(path)
    assert history.events, "an empty history proves nothing"
    result = await Replayer(
        workflows=[JourneyWorkflow, LeadAlertWorkflow, BroadcastWorkflow, TransactionalEmail]
    ).replay_workflow(history)
    assert result.replay_failure is None


@workflow.defn(name="Journey")
class _JourneyThatSleepsFirst(JourneyWorkflow):
    """An incompatible change: a new timer before the first step, without ``patched``."""

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        await workflow.sleep(timedelta(minutes=5))
        return await super().run(inp)


async def test_an_incompatible_change_fails_replay() -> None:
    history = _load(HISTORIES / "welcome-opened.json")
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[_JourneyThatSleepsFirst]).replay_workflow(history)
