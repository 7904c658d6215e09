"""Starting and signalling journeys: the only place that knows workflow ids and signal names.

Workflow ids derive from (campaign, contact, enrolment number), so starting is idempotent: a form
posted twice signals the running journey instead of starting a second one.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from campaigns.plan import Plan
from drip.settings import Settings
from workflows.journey import JourneyWorkflow
from workflows.types import (
    QUERY_STATE,
    SIGNAL_CONTROL,
    SIGNAL_EVENT,
    JourneyControl,
    JourneyInput,
    JourneySignal,
    JourneyState,
)

__all__ = [
    "NamespaceNotFound",
    "TemporalUnavailable",
    "check_namespace",
    "connect",
    "control_journey",
    "enrol",
    "journey_state",
    "journey_workflow_id",
    "signal_journey",
]


log = logging.getLogger(__name__)

#: how long connecting waits for Temporal to describe the namespace
NAMESPACE_RPC_TIMEOUT = timedelta(seconds=10)


class TemporalUnavailable(ConnectionError):
    """Temporal cannot be reached; the message names the setting to check."""


class NamespaceNotFound(TemporalUnavailable):
    """The server answers, but not for ``DRIP_TEMPORAL_NAMESPACE``; the message says how to
    create it. A worker would otherwise die on its first call and the API would record events
    that nothing routes."""


async def connect(settings: Settings) -> Client:
    """A client for the configured server and namespace, checked to exist (``check_namespace``):
    the SDK connects to a namespace that does not exist without a word."""
    try:
        client = await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
    except RuntimeError as exc:  # the SDK's core raises RuntimeError("Failed client connect ...")
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} (namespace "
            f"{settings.temporal_namespace}); check DRIP_TEMPORAL_ADDRESS and that the server "
            f"is up ({str(exc).splitlines()[0][:200]})"
        ) from exc
    await check_namespace(client)
    return client


async def check_namespace(client: Client, rpc_timeout: timedelta = NAMESPACE_RPC_TIMEOUT) -> None:
    """Raise ``NamespaceNotFound`` if the server says the client's namespace does not exist.

    Only that answer counts: credentials that may not describe namespaces, or a server that does
    not implement the call, are no proof it is missing, and the first real call will tell."""
    namespace = client.namespace
    address = client.service_client.config.target_host
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=rpc_timeout
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NamespaceNotFound(
                f"the Temporal namespace {namespace!r} does not exist on {address}; create it "
                f"once with `temporal operator namespace create --namespace {namespace} "
                f"--address {address}`, or set DRIP_TEMPORAL_NAMESPACE to one that exists"
            ) from exc
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise TemporalUnavailable(
                f"Temporal at {address} did not describe the namespace {namespace!r} "
                f"({exc.message[:200]}); check that the server is up"
            ) from exc
        log.debug("cannot describe the Temporal namespace %r: %s", namespace, exc)


def journey_workflow_id(campaign_id: str, contact_id: int, number: int = 1) -> str:
    return f"journey/{campaign_id}/{contact_id}/{number}"


async def enrol(
    client: Client,
    settings: Settings,
    plan: Plan,
    contact_id: int,
    signal: JourneySignal,
    *,
    number: int = 1,
    timezone: str = "UTC",
) -> bool:
    """Signal-with-start the contact's journey number ``number``; False if that journey
    already ran and ended.

    A closed journey is never restarted: re-entry is a new enrolment number (the router applies
    the campaign's rule), and the id reuse policy refuses the old id, which we report.
    """
    try:
        await client.start_workflow(
            JourneyWorkflow.run,
            JourneyInput(plan=plan, contact_id=contact_id, enrolment=number, timezone=timezone),
            id=journey_workflow_id(plan.campaign_id, contact_id, number),
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            start_signal=SIGNAL_EVENT,
            start_signal_args=[signal],
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


async def signal_journey(client: Client, workflow_id: str, signal: JourneySignal) -> bool:
    """Deliver an event to a journey; False if the journey has already finished."""
    handle: WorkflowHandle[JourneyWorkflow, object] = client.get_workflow_handle(workflow_id)
    try:
        await handle.signal(SIGNAL_EVENT, signal)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def control_journey(client: Client, workflow_id: str, action: str, reason: str = "") -> bool:
    """Pause, resume or cancel one journey; False if it has already finished."""
    handle: WorkflowHandle[JourneyWorkflow, object] = client.get_workflow_handle(workflow_id)
    try:
        await handle.signal(SIGNAL_CONTROL, JourneyControl(action=action, reason=reason))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def journey_state(client: Client, workflow_id: str) -> JourneyState:
    handle: WorkflowHandle[JourneyWorkflow, object] = client.get_workflow_handle(workflow_id)
    state: JourneyState = await handle.query(QUERY_STATE, result_type=JourneyState)
    return state
