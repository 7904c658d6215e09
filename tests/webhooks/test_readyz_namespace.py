"""/readyz against a real Temporal dev server that lacks ``DRIP_TEMPORAL_NAMESPACE``: the server
is healthy, yet nothing can be routed, so the API is not ready, and says how to create it."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.support import api_client
from webhooks.problems import PROBLEM_JSON


@pytest.mark.parametrize("connected", [False, True], ids=["connects-lazily", "given-a-client"])
async def test_readyz_is_503_naming_a_namespace_that_does_not_exist(
    settings: Settings,
    workspace: Workspace,
    engine: Engine,
    dev_env: WorkflowEnvironment,
    connected: bool,
) -> None:
    """Lazily (``drip api``) the gateway's connect refuses the namespace; with a client made
    earlier (the namespace deleted since) the probe still asks the server each time."""
    address = dev_env.client.service_client.config.target_host
    missing = f"marketing-{uuid.uuid4().hex[:8]}"
    absent = settings.model_copy(
        update={"temporal_address": address, "temporal_namespace": missing}
    )
    client = await Client.connect(address, namespace=missing) if connected else None
    async with api_client(absent, workspace, engine, client) as http:
        r = await http.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    problem = r.json()
    assert problem["checks"] == {"database": "ok", "temporal": "failed"}
    error = problem["errors"]["temporal"]
    assert f"the Temporal namespace '{missing}' does not exist on {address}" in error
    assert f"temporal operator namespace create --namespace {missing} --address {address}" in error
