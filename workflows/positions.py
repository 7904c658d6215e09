"""Where each running journey is: two search attributes in Temporal, not a database column.

A journey that comes to a step where it can stay a while (a wait, a ``wait_for``, a send, which
an SMTP outage or the send window can hold up, a call to the outside) upserts ``DripCampaign``
and ``DripStep`` on itself (``workflows.journey``), once per step it dwells at. The dashboard
counts the running journeys at each step of a campaign with ``count_workflows``, and a contact's
timeline, the journeys API and a sales alert read a running journey's step with ``describe``.

Why Temporal's visibility and not ``enrolments.current_step``: visibility is Temporal's own
index of "which workflows are where", kept by the server in its visibility store (SQLite in the
dev server, PostgreSQL or Elasticsearch in a cluster), so it scales with the cluster and not with
our database. The upsert is one command in a workflow task the journey completes anyway: no
activity, no transaction on the database the router and tracking write to. Writing the column
from a local activity instead was tried and reverted: about 15% fewer journeys per second and
timing failures in the full suite on SQLite, where every write queues behind the one writer.

The attributes must exist in the namespace before a journey upserts them, or its workflow task
fails. ``drip dev`` starts its dev server with them, every journey worker adds any that are
missing before it polls (``ensure_search_attributes``), and on a cluster where the worker may
not, the error says the one command an operator runs.

Readers get ``PositionsUnavailable`` (counts) or no entry (steps) when Temporal cannot answer:
it is away, slow, or a server without visibility queries (the time-skipping test server cannot
count). Pages say so rather than show zeros.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Final

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

__all__ = [
    "CAMPAIGN",
    "DWELL_KINDS",
    "STEP",
    "PositionsUnavailable",
    "current_steps",
    "dev_server_args",
    "ensure_search_attributes",
    "here_now",
]

log = logging.getLogger(__name__)

CAMPAIGN: Final = SearchAttributeKey.for_keyword("DripCampaign")
STEP: Final = SearchAttributeKey.for_keyword("DripStep")
_KEYS = (CAMPAIGN, STEP)
#: the step kinds a journey can be found at; it passes straight through the others
DWELL_KINDS: Final = frozenset({"send_email", "wait", "wait_for", "notify_sales", "webhook"})
#: how long a page waits for Temporal's answer before it says the positions are unavailable
TIMEOUT_SECONDS: Final = 3.0
#: describes in flight at once for one page
_CONCURRENT = 16
#: a worker that cannot list or add the attributes in this long stops with the reason
_RPC_TIMEOUT = timedelta(seconds=15)


class PositionsUnavailable(Exception):
    """Temporal could not say where the journeys are; the message says why, for the page."""


def dev_server_args() -> list[str]:
    """``temporal server start-dev`` options that create the attributes with the namespace."""
    args: list[str] = []
    for key in _KEYS:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


async def ensure_search_attributes(client: Client) -> None:
    """Add the attributes the journeys upsert if the namespace lacks them.

    Called by every journey worker before it polls. Adding is an operator call; where the
    worker's credentials may not (Temporal Cloud, a locked-down cluster) the error names the
    command to run once."""
    namespace = client.namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace), timeout=_RPC_TIMEOUT
        )
        present = set(listed.custom_attributes)
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping server cannot list
            raise
        present = set()
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in _KEYS
        if key.name not in present
    }
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing),
            timeout=_RPC_TIMEOUT,
        )
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:  # another worker added them first
            return
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE):
            raise RuntimeError(
                f"Temporal did not answer adding the search attributes {', '.join(missing)} "
                f"to namespace {namespace!r} ({err.message}); is the server up?"
            ) from err
        names = " ".join(f"--name {name}" for name in missing) + " --type Keyword"
        raise RuntimeError(
            f"Temporal namespace {namespace!r} lacks the search attributes "
            f"{', '.join(missing)} that journeys record their step in, and this worker could not "
            f"add them ({err.message}). Create them once: temporal operator search-attribute "
            f"create --namespace {namespace} {names}"
        ) from err


def _quoted(value: str) -> str:
    # campaign and step ids are slugs (campaigns.schema); anything else is refused, not escaped
    if "'" in value or "\\" in value:
        raise ValueError(f"not an id: {value!r}")
    return f"'{value}'"


async def here_now(
    client: Client,
    campaign_id: str,
    step_ids: Iterable[str],
) -> dict[str, int]:
    """Running journeys of ``campaign_id`` at each of ``step_ids``: one count per step, at
    once (the server groups counts by execution status only)."""
    steps = list(step_ids)
    base = f"ExecutionStatus = 'Running' AND {CAMPAIGN.name} = {_quoted(campaign_id)}"

    async def count(step_id: str) -> int:
        found = await client.count_workflows(f"{base} AND {STEP.name} = {_quoted(step_id)}")
        return found.count

    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            counts = await asyncio.gather(*(count(s) for s in steps))
    except TimeoutError:
        raise PositionsUnavailable(
            f"Temporal did not answer within {TIMEOUT_SECONDS:g} s"
        ) from None
    except RPCError as err:
        if err.status == RPCStatusCode.UNIMPLEMENTED:
            raise PositionsUnavailable("this Temporal server cannot count workflows") from None
        raise PositionsUnavailable(f"Temporal: {err.message}") from None
    return dict(zip(steps, counts, strict=True))


async def current_steps(client: Client, workflow_ids: Sequence[str]) -> dict[str, str]:
    """The step each of these journeys last dwelt at, by workflow id. A journey Temporal does
    not know or that has not reached such a step yet has no entry, and none has when Temporal
    takes longer than ``TIMEOUT_SECONDS``: the caller shows those as unknown."""
    gate = asyncio.Semaphore(_CONCURRENT)

    async def step_of(workflow_id: str) -> tuple[str, str | None]:
        async with gate:
            described = await client.get_workflow_handle(workflow_id).describe()
        return workflow_id, described.typed_search_attributes.get(STEP)

    if not workflow_ids:
        return {}
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            found = await asyncio.gather(
                *(step_of(w) for w in workflow_ids), return_exceptions=True
            )
    except TimeoutError:
        return {}
    return {w: step for w, step in _answered(found) if step}


def _answered(
    results: Sequence[tuple[str, str | None] | BaseException],
) -> Iterable[tuple[str, str | None]]:
    for result in results:
        if isinstance(result, Exception):  # not found, refused, connection lost: unknown
            log.debug("a journey's step was not read: %r", result)
            continue
        if isinstance(result, BaseException):  # cancelled: not ours to swallow
            raise result
        yield result
