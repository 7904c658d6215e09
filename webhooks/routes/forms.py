"""Public web forms: an accessible page that works without JavaScript, and JSON posting for apps.

A submission creates or updates the contact, records consent and a ``form`` event, and routes the
event, which starts the campaigns this form triggers (signal-with-start: posting twice gives one
contact and one journey).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from campaigns.schema import FormDefinition
from contacts import repository
from contacts.db import session_scope
from contacts.errors import InvalidEmail
from webhooks._templating import message_page, page
from webhooks.deps import EngineDep, GatewayDep, WorkspaceDep
from webhooks.problems import problem

__all__ = ["router"]

router = APIRouter(prefix="/forms", tags=["forms"])

MAX_BODY_BYTES = 64 * 1024
TRUTHY = {"yes", "on", "true", "1", True}


def _form_or_404(workspace: WorkspaceDep, form_id: str) -> FormDefinition | None:
    return workspace.forms.get(form_id)


@router.get("/{form_id}", response_class=HTMLResponse, summary="The hosted form page")
async def show_form(form_id: str, request: Request, workspace: WorkspaceDep) -> Response:
    form = _form_or_404(workspace, form_id)
    if form is None:
        return message_page(
            "Form not found",
            "This form does not exist.",
            status_code=404,
            workspace_name=workspace.config.name,
        )
    return page(
        "form.html",
        form=form,
        values={},
        errors={},
        action=request.url.path,
        workspace_name=workspace.config.name,
        postal_address=workspace.config.postal_address,
    )


@router.post(
    "/{form_id}",
    summary="Submit a form (urlencoded from the page, or JSON from an app)",
    status_code=202,
    responses={
        422: {"description": "invalid fields (problem JSON, or the page re-rendered)"},
        404: {"description": "unknown form"},
    },
)
async def submit_form(
    form_id: str, request: Request, workspace: WorkspaceDep, engine: EngineDep, gateway: GatewayDep
) -> Response:
    wants_json = "json" in request.headers.get("content-type", "")
    form = _form_or_404(workspace, form_id)
    if form is None:
        return problem(404, "Not Found", f"form '{form_id}' does not exist")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return problem(
            413, "Content Too Large", f"form posts are limited to {MAX_BODY_BYTES} bytes"
        )
    values = await _read_values(request, wants_json)
    if values is None:
        return problem(400, "Bad Request", "the body is not valid JSON or form data")

    errors, clean = _validate(form, values)
    if errors:
        if wants_json:
            return problem(
                422,
                "Invalid form submission",
                "some fields are invalid",
                errors=[{"field": k, "message": v} for k, v in errors.items()],
            )
        shown = {k: v for k, v in values.items() if isinstance(v, str) and k != "website"}
        return page(
            "form.html",
            422,
            form=form,
            values=shown,
            errors=errors,
            action=request.url.path,
            workspace_name=workspace.config.name,
            postal_address=workspace.config.postal_address,
        )

    if values.get("website"):
        # Honeypot filled: a bot. Answer like a success so it learns nothing; store nothing.
        return _accepted(form, wants_json, workspace.config.name)

    ip = request.client.host if request.client else None

    def record() -> tuple[int, int]:
        with session_scope(engine) as session:
            contact, _ = repository.upsert_contact(
                session, clean.pop("email"), clean, consent_source=f"form:{form.id}", consent_ip=ip
            )
            assert contact.id is not None
            event, _ = repository.record_event(
                session,
                contact_id=contact.id,
                type="form",
                name=form.id,
                dedupe_key=f"form:{form.id}:{uuid.uuid4()}",
                source=f"form:{form.id}",
                properties={"ip": ip} if ip else {},
            )
            assert event.id is not None
            return contact.id, event.id

    _, event_id = await run_in_threadpool(record)
    await gateway.route(event_id)
    return _accepted(form, wants_json, workspace.config.name)


async def _read_values(request: Request, wants_json: bool) -> dict[str, Any] | None:
    try:
        if wants_json:
            data = await request.json()
            return data if isinstance(data, dict) else None
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    except (ValueError, UnicodeDecodeError):
        return None


def _validate(
    form: FormDefinition, values: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Field errors keyed by field name, and the cleaned values (email normalised)."""
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for field in form.fields:
        raw = values.get(field.name)
        text = raw.strip() if isinstance(raw, str) else ("" if raw is None else None)
        if text is None:
            errors[field.name] = f"{field.label} must be text"
            continue
        if not text:
            if field.required:
                errors[field.name] = f"{field.label} is required"
            continue
        if len(text) > field.max_length:
            errors[field.name] = f"{field.label} is longer than {field.max_length} characters"
            continue
        if field.type == "email":
            try:
                text = repository.normalise_email(text)
            except InvalidEmail:
                errors[field.name] = f"{field.label} is not a valid email address"
                continue
        clean[field.name] = text
    consent = values.get("consent")
    if (consent.strip().lower() if isinstance(consent, str) else consent) not in TRUTHY:
        errors["consent"] = "Please tick the box to agree to receive our emails"
    return errors, clean


def _accepted(form: FormDefinition, wants_json: bool, workspace_name: str) -> Response:
    if wants_json:
        return JSONResponse({"status": "accepted", "message": form.thank_you}, status_code=202)
    return message_page("Thank you", form.thank_you, workspace_name=workspace_name)
