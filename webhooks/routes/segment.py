"""The Segment-compatible events API: ``POST /v1/track``, ``/identify``, ``/page``, ``/batch``.

A shop points an existing Segment or RudderStack library at drip by changing its host. The write
key is HTTP basic auth's user name with an empty password (or ``writeKey`` in the body, as
Segment also accepts); the keys are ``DRIP_WRITE_KEYS``, and while none is set the API answers
404. Bodies are capped as Segment caps them: 32 KB a call, 500 KB a batch (413 past that).

Browsers too (analytics.js, RudderStack's JS SDK), which post across origins:

- analytics.js posts a call to ``/v1/`` and its type's first letter (``/v1/t``, ``/v1/i``,
  ``/v1/p``, ``/v1/g``, ``/v1/a``; ``/v1/s`` for screen) and a batch to ``/v1/b``: aliases of
  the long paths, left out of the OpenAPI document (a library's wire detail, not an API);
- its body is JSON sent as ``text/plain`` (a "simple" request, no preflight) with the key in
  ``writeKey``: a ``text/plain`` body is read as JSON;
- CORS on every path here: ``OPTIONS`` preflights are answered 204 (any origin, ``POST``, the
  headers asked for) and every answer, errors included, carries ``Access-Control-Allow-Origin:
  *`` so the page can read it. No credentials (cookies) are ever allowed: the write key is the
  credential, and it is public in a browser anyway, so an origin allowlist (``form_origins`` is
  for forms) would stop no one but a misconfigured shop; events are checked by key, as Segment
  does.

How a message lands in drip:

- the contact: an email in ``traits.email`` (identify) or ``context.traits.email`` (any call)
  creates or updates the contact and stores ``userId``/``anonymousId`` as its fields
  ``user_id``/``anonymous_id``; a call with only ids finds the contact by them
  (``contacts.identities``). A call for nobody we know is answered 200 and dropped (logged):
  send ``identify`` with the email first, as Segment libraries do after a sign-up or login.
- ``track`` records an ``event`` named by ``drip_event_name`` (``Order Completed`` ->
  ``purchase``, ``Cart Abandoned`` -> ``cart_abandoned``), with a purchase's ``amount`` and
  ``items`` normalised; ``page``/``screen`` record a ``page``/``screen`` event; ``identify``
  records no event; ``group``/``alias`` are accepted and ignored.
- each event is stored once per ``messageId`` and routed to journeys once (triggers, ``wait_for``
  and goals), or left to the worker's sweep while Temporal is away.

Answers: ``200 {"success": true}`` once stored; 4xx problem JSON for anything a client gets
wrong (401 with a ``WWW-Authenticate`` challenge for a wrong key, 422 for a body of the wrong
shape; a batch is all or nothing); 503 when the database is unavailable, which Segment libraries
retry.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.types import Message, Receive, Scope, Send

from campaigns.workspace import Workspace
from contacts import cleaning, repository
from contacts.db import session_scope
from contacts.errors import InvalidEmail
from contacts.identities import ANONYMOUS_ID_FIELD, USER_ID_FIELD, find_by_identity
from contacts.marketing_consent import record_consent
from contacts.models import Contact, MarketingConsent, utcnow
from drip.settings import Settings
from webhooks.deps import EngineDep, GatewayDep, WorkspaceDep
from webhooks.problems import problem
from webhooks.routes._segment_payloads import (
    AnyMessage,
    Batch,
    Identify,
    Ignored,
    IgnoredCall,
    Page,
    Track,
    dedupe_key,
    drip_event_name,
    normalise_properties,
    occurred_at,
)

__all__ = ["MAX_BATCH_BYTES", "MAX_CALL_BYTES", "router"]

log = logging.getLogger(__name__)

#: Segment's limits: 32 KB for one call, 500 KB for a batch.
MAX_CALL_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="drip", charset="UTF-8"'}
#: what every answer carries, so a page on any site can read it (no credentials: the write key,
#: not a cookie, authenticates); analytics.js reads Retry-After on a 429/503
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"Retry-After, X-Request-ID"),
]
#: allowed in a preflight when the browser's list is absent or not a plain list of names
_CORS_HEADERS = b"Authorization, Content-Type, X-Retry-Count"
_HEADER_LIST = re.compile(
    rb"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:[ \t]*,[ \t]*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$"
)
#: Segment's reserved traits in camelCase -> the field names drip's templates use.
_TRAIT_FIELDS = {"firstName": "first_name", "lastName": "last_name", "createdAt": "created_at"}
#: how a contact's implied consent is recorded (``consent: {events_api: shop_collects_consent}``)
IMPLIED_SOURCE = "events API (workspace: shop collects consent)"


class Success(BaseModel):
    """What Segment answers, and what its libraries look for."""

    success: Literal[True] = True


class _WriteKeyDocs(HTTPBasic):
    """Declares basic auth in the OpenAPI document; the check itself is ``_guard``'s, which
    runs first and answers with problem JSON and a challenge."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


class _GuardedRoute(APIRoute):
    """Size cap and write key before FastAPI reads the body into the request model, so a
    stranger gets 401 (not 422) and a huge body is never parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        batch = self.path.rsplit("/", 1)[-1] in ("batch", "b")
        limit = MAX_BATCH_BYTES if batch else MAX_CALL_BYTES

        async def guarded(request: Request) -> Response:
            refused = await _guard(request, limit)
            return refused if refused is not None else await handler(request)

        return guarded

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """CORS: the preflight answered here (no key: browsers send none with it), and the
        headers added to every other answer, errors included, so the page can read them."""
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await _preflight(scope)(scope, receive, send)
            return

        async def send_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_CORS]
            await send(message)

        await super().handle(scope, receive, send_cors)


def _preflight(scope: Scope) -> Response:
    asked = next((v for k, v in scope["headers"] if k == b"access-control-request-headers"), b"")
    allowed = asked.strip() if len(asked) <= 1000 and _HEADER_LIST.match(asked.strip()) else b""
    preflight = Response(status_code=204)
    preflight.headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": (allowed or _CORS_HEADERS).decode("latin-1"),
            "Access-Control-Max-Age": "7200",
            "Vary": "Access-Control-Request-Headers",
        }
    )
    preflight.raw_headers.extend(_CORS)
    return preflight


router = APIRouter(
    prefix="/v1",
    tags=["events"],
    route_class=_GuardedRoute,
    dependencies=[Security(_WriteKeyDocs(scheme_name="writeKey", realm="drip", auto_error=False))],
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "wrong or missing write key (problem JSON)"},
    404: {"description": "the events API is off: no DRIP_WRITE_KEYS (problem JSON)"},
    413: {"description": "body over 32 KB (500 KB for a batch) (problem JSON)"},
    422: {"description": "not a Segment message of this type (problem JSON)"},
    503: {"description": "database unavailable; retry later (problem JSON)"},
}


async def track(
    message: Track, engine: EngineDep, gateway: GatewayDep, workspace: WorkspaceDep
) -> Response:
    return await _ingest([message], None, engine, gateway, _implied(workspace))


async def identify(
    message: Identify, engine: EngineDep, gateway: GatewayDep, workspace: WorkspaceDep
) -> Response:
    return await _ingest([message], None, engine, gateway, _implied(workspace))


async def page(
    message: Page, engine: EngineDep, gateway: GatewayDep, workspace: WorkspaceDep
) -> Response:
    message.type = "page"
    return await _ingest([message], None, engine, gateway, _implied(workspace))


async def screen(
    message: Page, engine: EngineDep, gateway: GatewayDep, workspace: WorkspaceDep
) -> Response:
    message.type = "screen"
    return await _ingest([message], None, engine, gateway, _implied(workspace))


async def batch(
    body: Batch, engine: EngineDep, gateway: GatewayDep, workspace: WorkspaceDep
) -> Response:
    return await _ingest(body.batch, body, engine, gateway, _implied(workspace))


def _implied(workspace: Workspace) -> bool:
    """The workspace says its shop collects marketing consent before it sends us a contact."""
    return workspace.config.consent.events_api == "shop_collects_consent"


async def ignored(message: IgnoredCall) -> Response:
    return _success()


#: every call once: its path, analytics.js's short path (``/v1/`` and the call type's first
#: letter, ``/v1/b`` for a batch; left out of the OpenAPI document), its summary, its handler
_CALLS: list[tuple[str, str, str, Callable[..., Coroutine[Any, Any, Response]]]] = [
    ("track", "t", "Record what a user did (Segment track)", track),
    ("identify", "i", "Say who a user is (Segment identify)", identify),
    ("page", "p", "Record a page view (Segment page)", page),
    ("screen", "s", "Record an app screen view (Segment screen)", screen),
    ("batch", "b", "Many messages in one call (Segment batch)", batch),
    ("group", "g", "Put a user in a group (Segment group; accepted and ignored)", ignored),
    ("alias", "a", "Merge two user ids (Segment alias; accepted and ignored)", ignored),
]
for _long, _short, _summary, _endpoint in _CALLS:
    for _path, _shown in ((_long, True), (_short, False)):
        router.add_api_route(
            f"/{_path}",
            _endpoint,
            name=_long,
            methods=["POST"],
            summary=_summary if _shown else None,
            response_model=Success,
            responses=_ERRORS,
            include_in_schema=_shown,
        )


async def _guard(request: Request, limit: int) -> Response | None:
    settings: Settings = request.app.state.settings
    keys = [k.get_secret_value().encode() for k in settings.write_keys]
    if not keys:
        return problem(404, "Not Found", "the events API is off until DRIP_WRITE_KEYS is set")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # FastAPI reads the model from here
    if _text_plain(request):
        _read_as_json(request)
    given = _header_key(request) or _body_key(body)
    # every key compared, in constant time, so timing tells nothing about which nearly matched
    if not any([hmac.compare_digest(given, key) for key in keys]) or not given:
        refused = problem(401, "Unauthorized", "wrong or missing write key")
        refused.headers.update(_CHALLENGE)
        return refused
    if (b"NaN" in body or b"Infinity" in body) and not _finite(body):
        return problem(422, "Invalid request", "NaN and Infinity are not JSON numbers")
    return None


def _text_plain(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0]
    return media_type.strip().lower() == "text/plain"


def _read_as_json(request: Request) -> None:
    """analytics.js sends its JSON as ``text/plain`` (so a browser sends it without a CORS
    preflight): have FastAPI read it as the JSON it is."""
    kept = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    request.scope["headers"] = [*kept, (b"content-type", b"application/json")]
    request.__dict__.pop("_headers", None)  # Starlette caches the headers it parsed


def _finite(body: bytes) -> bool:
    """False if the body uses the NaN/Infinity literals Python's JSON reader accepts (no
    database stores them in JSON); True otherwise, also for a body that is not JSON."""

    def refuse(constant: str) -> None:
        raise OverflowError(constant)

    try:
        json.loads(body, parse_constant=refuse)
    except OverflowError:
        return False
    except (ValueError, RecursionError):
        pass
    return True


def _too_large(limit: int) -> Response:
    return problem(413, "Content Too Large", f"this call is limited to {limit} bytes")


def _header_key(request: Request) -> bytes:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        user, _, _password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return b""
    return user


def _body_key(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return b""
    key = data.get("writeKey") if isinstance(data, dict) else None
    return key.encode() if isinstance(key, str) else b""


@dataclass
class _Outcome:
    route: list[int] = field(default_factory=list)
    ignored: int = 0


async def _ingest(
    messages: Sequence[AnyMessage],
    batch: Batch | None,
    engine: Engine,
    gateway: GatewayDep,
    implied: bool,
) -> Response:
    unclean = _unclean(messages, batch)
    if unclean:
        return problem(
            422,
            "Invalid request",
            "the request has values drip does not store",
            errors=[{"field": f, "message": m} for f, m in unclean],
        )

    def store() -> _Outcome:
        outcome = _Outcome()
        with session_scope(engine) as session:
            for message in messages:
                _store_one(session, message, batch, outcome, implied)
        return outcome

    try:
        outcome = await run_in_threadpool(store)
    except OperationalError:
        log.warning("events API: database unavailable", exc_info=True)
        unavailable = problem(503, "Service Unavailable", "the database is unavailable")
        unavailable.headers["Retry-After"] = "10"
        return unavailable
    if outcome.ignored:
        log.info("events API: %d message(s) for no known contact ignored", outcome.ignored)
    for event_id in outcome.route:
        await gateway.route(event_id)
    return _success()


def _unclean(messages: Sequence[AnyMessage], batch: Batch | None) -> list[tuple[str, str]]:
    """(field, reason) for each value that ``contacts.cleaning`` refuses: non-finite numbers
    and control, bidirectional or surrogate characters in traits and properties; control
    characters in ids and names, which are one line."""
    found = cleaning.json_problems(batch.context.traits, "context.traits") if batch else []
    for n, message in enumerate(messages):
        if isinstance(message, Ignored):
            continue  # not stored
        at = f"batch.{n}." if batch else ""
        lines: dict[str, object] = {"userId": message.userId, "anonymousId": message.anonymousId}
        lines["messageId"] = message.messageId
        found += cleaning.json_problems(message.context.traits, f"{at}context.traits")
        if isinstance(message, Identify):
            found += cleaning.json_problems(message.traits, f"{at}traits")
        if isinstance(message, Track | Page):
            found += cleaning.json_problems(message.properties, f"{at}properties")
        if isinstance(message, Track):
            lines["event"] = message.event
        if isinstance(message, Page):
            lines |= {"name": message.name, "category": message.category}
        for name, text in lines.items():
            if isinstance(text, str) and (reason := cleaning.text_problem(text)):
                found.append((f"{at}{name}", reason))
    return found


def _success() -> Response:
    return Response(Success().model_dump_json(), media_type="application/json")


def _store_one(
    session: Session, message: AnyMessage, batch: Batch | None, outcome: _Outcome, implied: bool
) -> None:
    if isinstance(message, Ignored):
        return
    contact = _contact(session, message, batch, implied)
    if contact is None or contact.id is None:
        outcome.ignored += 1
        return
    if isinstance(message, Identify):
        return
    if isinstance(message, Track):
        type_, name = "event", drip_event_name(message.event)
        properties = normalise_properties(name, message.properties)
    else:
        type_, name = message.type, (message.name or "")
        properties = dict(message.properties)
        if message.category:
            properties.setdefault("category", message.category)
    message_id = message.messageId or f"drip-{uuid.uuid4()}"
    event, created = repository.record_event(
        session,
        contact_id=contact.id,
        type=type_,
        name=name,
        properties=properties,
        dedupe_key=dedupe_key(message_id),
        source=f"segment:{message.type}",
        occurred_at=occurred_at(message, batch.sentAt if batch else None, utcnow()),
    )
    # a retry of a message routed already signals nothing; one Temporal missed is routed now
    if event.id is not None and (created or event.routed_at is None):
        outcome.route.append(event.id)


def _contact(
    session: Session, message: AnyMessage, batch: Batch | None, implied: bool
) -> Contact | None:
    """The contact the message is about: by email if it carries one (created if new), else by
    ``userId``/``anonymousId``.

    A contact created here has no marketing consent (``none``): a shop's events say what
    someone bought or left in a basket, not that they agreed to marketing email. When the
    workspace says its shop collects consent (``implied``), the new contact's consent is
    recorded as implied, with the caller's ``context.ip`` when it sends one."""
    traits = dict(batch.context.traits) if batch else {}
    traits.update(message.context.traits)
    if isinstance(message, Identify):
        traits.update(message.traits)
    email = traits.get("email")
    if isinstance(email, str) and email.strip():
        ids = {USER_ID_FIELD: message.user_id, ANONYMOUS_ID_FIELD: message.anonymous_id}
        fields = _fields(message.traits) if isinstance(message, Identify) else {}
        try:
            contact, created = repository.upsert_contact(
                session, email, {**fields, **ids}, created_consent=MarketingConsent.none
            )
            if created and implied:
                record_consent(
                    session,
                    contact,
                    source=IMPLIED_SOURCE,
                    ip=_context_ip(message, batch),
                    kind=MarketingConsent.implied,
                )
            return contact
        except InvalidEmail:
            log.info("events API: invalid email in traits ignored")
    return find_by_identity(session, user_id=message.user_id, anonymous_id=message.anonymous_id)


def _context_ip(message: AnyMessage, batch: Batch | None) -> str | None:
    """The end user's IP as the caller states it (Segment's ``context.ip``), if it is one."""
    for context in (message.context, batch.context if batch else None):
        value = (context.model_extra or {}).get("ip") if context is not None else None
        if isinstance(value, str):
            try:
                return str(ipaddress.ip_address(value.strip()))
            except ValueError:
                return None
    return None


def _fields(traits: dict[str, Any]) -> dict[str, Any]:
    """Identify traits as contact fields (``firstName`` -> ``first_name``), minus the email
    (the contact's key) and ``id`` (``userId`` is stored as ``user_id``)."""
    return {_TRAIT_FIELDS.get(k, k): v for k, v in traits.items() if k not in ("email", "id")}
