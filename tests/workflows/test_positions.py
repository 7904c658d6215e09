"""A journey records the step it dwells at as search attributes (``workflows.positions``):
only steps where it can stay a while, each once, readable with ``describe`` on the
time-skipping server; and the attributes are created in a namespace that lacks them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.engine_support import Journeys, journeys
from tests.support import SmtpServer, venv_binary
from workflows.positions import CAMPAIGN, STEP, current_steps, ensure_search_attributes

MINUTE = timedelta(minutes=1)


@pytest.fixture
async def j(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> AsyncIterator[Journeys]:
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as stack:
        yield stack


async def _recorded(client: Client, workflow_id: str) -> list[str]:
    """The DripStep values the journey upserted, in order, from its history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    steps = []
    for event in history.events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes
            payload = fields.search_attributes.indexed_fields.get(STEP.name)
            if payload is not None:
                steps.append(payload.data.decode().strip('"'))
    return steps


async def _described(client: Client, workflow_id: str) -> tuple[str | None, str | None]:
    described = await client.get_workflow_handle(workflow_id).describe()
    attributes = described.typed_search_attributes
    return attributes.get(CAMPAIGN), attributes.get(STEP)


async def test_a_journey_records_only_the_steps_it_dwells_at(j: Journeys) -> None:
    ann = await j.form("newsletter", "ann@example.com", first_name="Ann")
    await j.advance(MINUTE)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 1)
    workflow_id = j.enrolment(ann, "welcome").workflow_id
    client = j.env.client
    assert await _described(client, workflow_id) == ("welcome", "wait_for_open")
    assert await current_steps(client, [workflow_id, "journey/nobody/1/1"]) == {
        workflow_id: "wait_for_open"
    }

    await j.track("open", ann, "welcome")
    await j.advance(MINUTE)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 2)  # the tips
    assert await _described(client, workflow_id) == ("welcome", "wait_for_click")
    await j.track("click", ann, "tips")
    await j.advance(MINUTE)
    await j.result(workflow_id)
    assert "engaged" in j.get(ann).tags
    # the sends and the waits, once each; tag_engaged and done are passed straight through
    assert await _recorded(client, workflow_id) == [
        "welcome",
        "wait_for_open",
        "tips",
        "wait_for_click",
    ]


@pytest.fixture
async def bare_dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server as a cluster's namespace starts: no search attributes of ours (the
    ``dev_env`` fixture adds them, as ``drip worker`` does)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"), ui=False
    )
    yield env
    await env.shutdown()


async def test_the_attributes_are_added_to_a_namespace_without_them(
    bare_dev_server: WorkflowEnvironment,
) -> None:
    client = bare_dev_server.client

    async def names() -> set[str]:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        return set(listed.custom_attributes)

    assert not {"DripCampaign", "DripStep"} & await names()  # a fresh dev server, no flags
    await ensure_search_attributes(client)
    deadline = time.monotonic() + 15
    while not {"DripCampaign", "DripStep"} <= await names():
        assert time.monotonic() < deadline, "the attributes never appeared"
        await asyncio.sleep(0.2)
    await ensure_search_attributes(client)  # a second worker starting: no error
