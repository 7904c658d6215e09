"""Public web forms: an accessible page that works without JavaScript, an embeddable snippet,
and JSON posting for apps.

A submission creates or updates the contact, records consent and a ``form`` event, and routes the
event, which starts the campaigns this form triggers (signal-with-start: posting twice gives one
contact and one journey). With ``double_opt_in`` it records only a pending request and sends a
confirmation email instead; ``confirm.py`` does the rest when the link is confirmed.

Abuse: a honeypot field (``website``) that people never fill answers like a success and stores
nothing; each IP may post to a form ``form_rate_per_minute`` times a minute (429); a browser may
be sent on only to a host in ``form_redirect_hosts`` (else 400, never an open redirect). CSRF
tokens cannot apply (the forms are meant to be posted from other sites); what protects people is
that a post can only subscribe an address, and with double opt-in only its owner can. Workspaces
that want to may list ``form_origins``: a browser post from any other site is then refused (403).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from campaigns.schema import FormDefinition
from campaigns.workspace import Workspace
from contacts import cleaning, consent, repository
from contacts.db import session_scope
from contacts.errors import InvalidEmail
from emails import SendError
from webhooks import _optin
from webhooks._ratelimit import Limit, retry_after
from webhooks._templating import message_page, page
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
from webhooks.middleware import client_address
from webhooks.problems import FORM_TYPES, negotiated_problem, problem
from webhooks.routes.confirm import router as confirm_router

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/forms", tags=["forms"])
router.include_router(confirm_router)

MAX_BODY_BYTES = 64 * 1024
TRUTHY = {"yes", "on", "true", "1", True}
HONEYPOT = "website"
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number"}
_JSON_TYPES |= {bool: "a boolean", type(None): "null"}


def _error(
    wants_json: bool, status: int, title: str, detail: str, workspace: Workspace
) -> Response:
    """Problem JSON for apps, a short page for browsers."""
    if wants_json:
        return problem(status, title, detail)
    return message_page(title, detail, status_code=status, workspace_name=workspace.config.name)


def _safe_redirect(url: str, workspace: Workspace) -> str | None:
    """``url`` if a browser may be sent there: https, on an allowlisted host, nothing odd in it
    (a backslash or whitespace that browsers read differently from us)."""
    if len(url) > 2000 or any(c in url for c in "\\\t\r\n ") or not url.startswith("https://"):
        return None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return url if host in {h.lower() for h in workspace.config.form_redirect_hosts} else None


def _origin_allowed(request: Request, workspace: Workspace, base_url: str) -> bool:
    """With ``form_origins`` set, a browser post (it always sends Origin or Referer when
    posting from another site) must come from one of them or from our own pages."""
    allowed = workspace.config.form_origins
    if not allowed:
        return True
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is None:
        return True  # not a browser (curl, an app's server): nothing to forge
    ours = urlsplit(base_url)
    permitted = {o.rstrip("/").lower() for o in allowed} | {f"{ours.scheme}://{ours.netloc}"}
    return origin.rstrip("/").lower() in permitted


def _not_found(workspace: Workspace) -> HTMLResponse:
    return message_page(
        "Form not found",
        "This form does not exist.",
        status_code=404,
        workspace_name=workspace.config.name,
    )


def _form_page(workspace: Workspace, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The hosted form page; its CSP lets the post's 303 go on to an allowlisted host (browsers
    apply ``form-action`` to the redirects that follow a form submission too)."""
    response = page("form.html", status_code, workspace=workspace, **context)
    hosts = " ".join(f"https://{h}" for h in workspace.config.form_redirect_hosts)
    if hosts:
        csp = response.headers["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = csp.replace(
            "form-action 'self'", f"form-action 'self' {hosts}"
        )
    return response


def _hidden_values(form: FormDefinition, source: Any) -> dict[str, str]:
    """Each hidden field's value from ``source`` (query or body) when it is text, else its
    default; cut to 200 characters."""
    values: dict[str, str] = {}
    for name, default in form.hidden.items():
        raw = source.get(name)
        values[name] = raw.strip()[:200] if isinstance(raw, str) and raw.strip() else default
    return values


@router.get(
    "/{form_id}",
    response_class=HTMLResponse,
    summary="The hosted form page",
    responses={404: {"description": "unknown form (a page)"}},
)
async def show_form(form_id: str, request: Request, workspace: WorkspaceDep) -> Response:
    form = workspace.forms.get(form_id)
    if form is None:
        return _not_found(workspace)
    wanted = request.query_params.get("redirect")
    return _form_page(
        workspace,
        form=form,
        values={},
        errors={},
        hidden=_hidden_values(form, request.query_params),
        redirect=_safe_redirect(wanted, workspace) if wanted else None,
        action=request.url.path,
        workspace_name=workspace.config.name,
        postal_address=workspace.config.postal_address,
    )


@router.get(
    "/{form_id}/embed",
    response_class=HTMLResponse,
    summary="An HTML <form> snippet to paste into another site (no JavaScript needed)",
    responses={404: {"description": "unknown form (a page)"}},
)
async def embed_form(form_id: str, workspace: WorkspaceDep, settings: SettingsDep) -> Response:
    form = workspace.forms.get(form_id)
    if form is None:
        return _not_found(workspace)
    page_response = page(
        "embed.html",
        form=form,
        action=f"{settings.public_base_url.rstrip('/')}/forms/{form.id}",
    )
    # a fragment to copy, not a page to run: show it as text in a browser
    return Response(
        page_response.body,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.post(
    "/{form_id}",
    summary="Submit a form (urlencoded from the page, or JSON from an app)",
    status_code=202,
    responses={
        303: {"description": "browsers, to the form's or an allowlisted redirect"},
        400: {"description": "unreadable body, or a redirect outside form_redirect_hosts"},
        403: {"description": "posted from a site not in form_origins"},
        404: {"description": "unknown form"},
        413: {"description": "a body over 64 KB (problem JSON, or a page for browsers)"},
        415: {"description": "a body that is neither JSON nor form data (problem JSON)"},
        422: {"description": "invalid fields (problem JSON, or the page re-rendered)"},
        429: {"description": "too many posts from this IP address (Retry-After)"},
        503: {"description": "the confirmation email could not be sent; try again later"},
    },
)
async def submit_form(
    form_id: str,
    request: Request,
    workspace: WorkspaceDep,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
) -> Response:
    wants_json = "json" in request.headers.get("content-type", "")
    form = workspace.forms.get(form_id)
    if form is None:
        return _error(wants_json, 404, "Not Found", f"form '{form_id}' does not exist", workspace)
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not wants_json and media_type not in FORM_TYPES:  # XML, or no body at all: not a form
        return negotiated_problem(
            request, 415, "send the form as JSON, application/x-www-form-urlencoded or multipart"
        )
    ip = client_address(request)
    limit = Limit("form", settings.form_rate_per_minute, 60.0)
    verdict = await run_in_threadpool(
        request.app.state.rate_limiter.hit, (limit, f"{ip}\x00{form.id}")
    )
    if not verdict.allowed:
        response = _error(
            wants_json,
            429,
            "Too Many Requests",
            "too many submissions from your address; please try again in a minute",
            workspace,
        )
        response.headers["Retry-After"] = retry_after(verdict.wait)
        return response
    if not _origin_allowed(request, workspace, settings.public_base_url):
        return _error(
            wants_json, 403, "Forbidden", "this form may not be posted from that site", workspace
        )
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(
            wants_json,
            413,
            "Content Too Large",
            f"form posts are limited to {MAX_BODY_BYTES} bytes",
            workspace,
        )
    values = await _read_values(request, wants_json)
    if values is None:
        return _error(
            wants_json, 400, "Bad Request", "the body is not valid JSON or form data", workspace
        )
    if not isinstance(values, dict):  # JSON, but a list or a string: not named fields
        return problem(
            422, "Invalid form submission", f"the body must be a JSON object, not {values}"
        )

    redirect = form.redirect
    wanted = values.get("redirect") or request.query_params.get("redirect")
    if wanted:
        redirect = _safe_redirect(wanted, workspace) if isinstance(wanted, str) else None
        if redirect is None:
            return _error(
                wants_json,
                400,
                "Redirect not allowed",
                "the redirect target is not an https address on this workspace's allowlist",
                workspace,
            )

    if values.get(HONEYPOT):
        # Honeypot filled: a bot. Answer like a success so it learns nothing; store nothing.
        return _accepted(form, wants_json, workspace, redirect)

    errors, clean = _validate(form, values)
    if errors:
        if wants_json:
            return problem(
                422,
                "Invalid form submission",
                "some fields are invalid",
                errors=[{"field": k, "message": v} for k, v in errors.items()],
            )
        shown = {k: v for k, v in values.items() if isinstance(v, str) and k != HONEYPOT}
        return _form_page(
            workspace,
            422,
            form=form,
            values=shown,
            errors=errors,
            hidden=_hidden_values(form, values),
            redirect=redirect if wanted else None,
            action=request.url.path,
            workspace_name=workspace.config.name,
            postal_address=workspace.config.postal_address,
        )
    clean.update(_hidden_values(form, values))
    email = clean.pop("email")

    if form.double_opt_in:
        return await _request_confirmation(
            request, form, email, clean, ip, wants_json, redirect, workspace, engine, settings
        )

    def record() -> int:
        with session_scope(engine) as session:
            contact, _ = repository.upsert_contact(
                session, email, clean, consent_source=f"form:{form.id}", consent_ip=ip
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
            return event.id

    event_id = await run_in_threadpool(record)
    await gateway.route(event_id)
    return _accepted(form, wants_json, workspace, redirect)


async def _request_confirmation(
    request: Request,
    form: FormDefinition,
    email: str,
    fields: dict[str, Any],
    ip: str | None,
    wants_json: bool,
    redirect: str | None,
    workspace: Workspace,
    engine: EngineDep,
    settings: SettingsDep,
) -> Response:
    """Double opt-in: store the request, email the link; the journey waits for the click."""

    def record() -> consent.OptInRequest | None:
        with session_scope(engine) as session:
            return consent.request_opt_in(
                session, email=email, form_id=form.id, fields=fields, ip=ip
            )

    pending = await run_in_threadpool(record)
    if pending is not None:
        token = _optin.confirm_token(
            settings.secret(),
            contact_id=pending.contact_id,
            request_id=pending.request_id,
            form_id=form.id,
        )
        url = f"{settings.public_base_url.rstrip('/')}/forms/{form.id}/confirm/{token}"
        try:
            await _optin.send_confirmation(
                _optin.transport(request), workspace=workspace, form=form, to=pending.email, url=url
            )
        except (SendError, OSError) as exc:
            log.warning("confirmation email for form %s not sent: %s", form.id, exc)
            response = _error(
                wants_json,
                503,
                "Service Unavailable",
                "we could not send the confirmation email just now; please try again later",
                workspace,
            )
            response.headers["Retry-After"] = "60"
            return response
    # a blocked address (bounced, complained) gets the same answer: the form tells nobody
    # anything about an address
    return _accepted(form, wants_json, workspace, redirect, status="confirmation_sent")


async def _read_values(request: Request, wants_json: bool) -> dict[str, Any] | str | None:
    """The posted fields; None if the body cannot be read, or the JSON type it has instead."""
    try:
        if wants_json:
            data = await request.json()
            return data if isinstance(data, dict) else _JSON_TYPES.get(type(data), "a value")
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
                text = cleaning.normalise_email(text)
            except InvalidEmail as exc:
                errors[field.name] = f"{field.label} is not a valid email address ({exc})"
                continue
        elif reason := cleaning.text_problem(text):
            errors[field.name] = f"{field.label} {reason}"
            continue
        clean[field.name] = text
    for name in form.hidden:
        raw = values.get(name)
        if not isinstance(raw, str):
            continue
        if len(raw.strip()) > 200:
            errors[name] = f"{name} is longer than 200 characters"
        elif reason := cleaning.text_problem(raw.strip()):
            errors[name] = f"{name} {reason}"
    consent_given = values.get("consent")
    if isinstance(consent_given, str):
        consent_given = consent_given.strip().lower()
    if not isinstance(consent_given, str | bool) or consent_given not in TRUTHY:
        errors["consent"] = "Please tick the box to agree to receive our emails"
    return errors, clean


def _accepted(
    form: FormDefinition,
    wants_json: bool,
    workspace: Workspace,
    redirect: str | None,
    *,
    status: str = "accepted",
) -> Response:
    if wants_json:
        body: dict[str, Any] = {"status": status, "message": form.thank_you}
        if redirect:
            body["redirect"] = redirect
        return JSONResponse(body, status_code=202)
    if redirect:
        return RedirectResponse(redirect, status_code=303)
    return message_page("Thank you", form.thank_you, workspace_name=workspace.config.name)
