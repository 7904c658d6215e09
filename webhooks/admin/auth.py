"""The admin API's door: ``Authorization: Bearer drip_...`` and one scope per route.

A missing, malformed, unknown or revoked key answers 401 with ``WWW-Authenticate: Bearer``; a
valid key without the route's scope answers 403 (``error="insufficient_scope"``, RFC 6750).
The check runs before the body is read or validated (``CappedRoute`` calls it first), so an
unauthenticated client learns nothing from validation errors and cannot make us parse 20 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from contacts import apikeys
from contacts.db import session_scope
from webhooks.admin._common import AdminProblem

__all__ = [
    "BroadcastsRead",
    "BroadcastsSend",
    "Caller",
    "CampaignsRead",
    "ContactsErase",
    "ContactsRead",
    "ContactsWrite",
    "EventsRead",
    "JourneysRead",
    "JourneysWrite",
    "MessagesRead",
    "MessagesResend",
    "RequireScope",
    "Send",
    "SuppressionsRead",
    "SuppressionsWrite",
    "WebhooksRead",
    "WebhooksWrite",
    "bearer",
]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="drip_<key>",
    description="An API key made with `drip apikeys create NAME --scope ...`.",
)
_REALM = 'Bearer realm="drip"'


@dataclass(frozen=True)
class Caller:
    """The key a request came with."""

    key_id: int
    name: str
    prefix: str
    scopes: frozenset[str]

    @property
    def label(self) -> str:
        """How audit records name the caller: never the key itself."""
        return f"api:{self.prefix}"


class RequireScope:
    """A dependency that authenticates the request and requires ``scope``."""

    def __init__(self, scope: str) -> None:
        if scope not in apikeys.SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.required_scope = scope

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Caller:
        cached = getattr(request.state, "admin_caller", None)
        return cached if isinstance(cached, Caller) else await self.check(request)

    async def check(self, request: Request) -> Caller:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AdminProblem(
                401,
                "Unauthorized",
                "send an API key as `Authorization: Bearer drip_...`",
                headers={"WWW-Authenticate": _REALM},
            )
        engine = cast(Engine, request.app.state.engine)

        def verify() -> Caller | None:
            with session_scope(engine) as session:
                row = apikeys.verify_key(session, key)
                if row is None or row.id is None:
                    return None
                return Caller(row.id, row.name, row.prefix, frozenset(row.scopes))

        caller = await run_in_threadpool(verify)
        if caller is None:
            raise AdminProblem(
                401,
                "Unauthorized",
                "the API key is unknown or revoked",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        if self.required_scope not in caller.scopes:
            raise AdminProblem(
                403,
                "Forbidden",
                f"this API key lacks the scope {self.required_scope!r}",
                headers={
                    "WWW-Authenticate": f'{_REALM}, error="insufficient_scope", '
                    f'scope="{self.required_scope}"'
                },
            )
        request.state.admin_caller = caller
        return caller


def _scope(scope: str) -> object:
    return Depends(RequireScope(scope))


# one alias per scope: ``caller: ContactsRead`` in a route's parameters
ContactsRead = Annotated[Caller, _scope("contacts:read")]
ContactsWrite = Annotated[Caller, _scope("contacts:write")]
ContactsErase = Annotated[Caller, _scope("contacts:erase")]
EventsRead = Annotated[Caller, _scope("events:read")]
CampaignsRead = Annotated[Caller, _scope("campaigns:read")]
JourneysRead = Annotated[Caller, _scope("journeys:read")]
JourneysWrite = Annotated[Caller, _scope("journeys:write")]
MessagesRead = Annotated[Caller, _scope("messages:read")]
MessagesResend = Annotated[Caller, _scope("messages:resend")]
BroadcastsRead = Annotated[Caller, _scope("broadcasts:read")]
BroadcastsSend = Annotated[Caller, _scope("broadcasts:send")]
SuppressionsRead = Annotated[Caller, _scope("suppressions:read")]
SuppressionsWrite = Annotated[Caller, _scope("suppressions:write")]
Send = Annotated[Caller, _scope("send")]
WebhooksRead = Annotated[Caller, _scope("webhooks:read")]
WebhooksWrite = Annotated[Caller, _scope("webhooks:write")]
