"""``POST /api/contacts/{id}/merge``: merge a duplicate contact into this one.

The merge is ``contacts.hygiene.merge_contacts``: the duplicate's events, messages, journeys and
segment memberships move here, fields are filled (this contact's values win; conflicts are
reported), tags are joined, scores added, the stricter status and the earliest consent kept, and
a ``merged`` audit event recorded. The duplicate's running journeys are then cancelled through
Temporal, so one running journey per campaign remains; with Temporal unreachable the merge
stands (the duplicate is an unsubscribed tombstone, so its journeys send nothing) and
``journeys_cancelled`` is false.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.hygiene import MergeRefused, MergeResult, merge_contacts
from contacts.models import ContactStatus, utcnow
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin.auth import ContactsWrite
from webhooks.deps import EngineDep, GatewayDep, WorkspaceDep
from workflows.operations import control_many
from workflows.scoring import apply_scores

__all__ = ["router"]

router = APIRouter(prefix="/contacts", tags=["admin: contacts"], route_class=CappedRoute)

ContactId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the contact kept")]


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: at most 2**53 - 1, JSON's exact integers: a larger number read through a double (as
    #: JavaScript and many generators do) is another number than the one meant
    merge_id: Annotated[int, Field(ge=1, le=2**53 - 1, description="the duplicate, merged away")]


class MergeReport(BaseModel):
    keep_id: int
    merge_id: int
    merged_email: str
    events_moved: int
    messages_moved: int
    enrolments_moved: int
    segment_memberships_moved: int
    fields_filled: list[str]
    #: {field: {"kept": value, "merged": value}}; the kept contact's value stays
    field_conflicts: dict[str, dict[str, Any]]
    tags_added: list[str]
    score: int
    status: ContactStatus
    #: the duplicate's running journeys (workflow ids), cancelled
    journeys_ended: list[str]
    #: false when Temporal could not be told (the journeys send nothing, but still run)
    journeys_cancelled: bool
    audit_event_id: int | None


@router.post(
    "/{contact_id}/merge",
    summary="Merge a duplicate into this contact; the duplicate's running journeys end",
    response_model=MergeReport,
    responses=problems(404, 409, 413),
)
async def merge_contact(
    contact_id: ContactId,
    body: MergeRequest,
    caller: ContactsWrite,
    engine: EngineDep,
    gateway: GatewayDep,
    workspace: WorkspaceDep,
) -> MergeReport:
    def merge() -> MergeResult:
        with session_scope(engine) as session:
            try:
                result = merge_contacts(session, contact_id, body.merge_id, actor=caller.label)
            except NotFound as exc:
                raise AdminProblem(404, "Not Found", str(exc)) from None
            except MergeRefused as exc:
                raise AdminProblem(409, "Conflict", str(exc)) from None
            # the merge dropped both running scores: score the combined history now
            result.score = apply_scores(session, contact_id, workspace.sales, now=utcnow()).after
            return result

    result = await run_in_threadpool(merge)
    cancelled = True
    if result.journeys_to_end:
        try:
            client = await gateway.client()
            outcome = await control_many(
                client, result.journeys_to_end, "cancel", f"merged into contact {contact_id}"
            )
            cancelled = all(o is True or o is False for o in outcome.values())
        except Exception:
            cancelled = False
    return MergeReport(
        keep_id=result.keep_id,
        merge_id=result.merge_id,
        merged_email=result.merged_email,
        events_moved=result.events_moved,
        messages_moved=result.messages_moved,
        enrolments_moved=result.enrolments_moved,
        segment_memberships_moved=result.segment_memberships_moved,
        fields_filled=result.fields_filled,
        field_conflicts=result.field_conflicts,
        tags_added=result.tags_added,
        score=result.score,
        status=result.status,
        journeys_ended=result.journeys_to_end,
        journeys_cancelled=cancelled,
        audit_event_id=result.audit_event_id,
    )
