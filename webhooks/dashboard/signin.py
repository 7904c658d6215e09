"""Signing in and out of the dashboard, and its front door (each role's first page).

A failed sign-in says the same thing whether the address is unknown, the password wrong or the
user disabled, and takes as long (``contacts.users.authenticate``), so the form cannot be used
to find out who has an account. Failed attempts are rate-limited per client address and per
typed address (429 with ``Retry-After``; ``LoginLimits``). ``next`` only ever sends back to a
dashboard path, so the sign-in page cannot be made into an open redirect.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from contacts import users
from contacts.db import session_scope
from contacts.models import Role
from webhooks._ratelimit import retry_after
from webhooks.dashboard._auth import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    CsrfChecked,
    Viewer,
    cookie_secure,
    login_limits,
    new_login_csrf,
)
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep
from webhooks.middleware import client_address

__all__ = ["router"]

router = APIRouter()


def _safe_next(value: str) -> str:
    """A dashboard path to go back to, or the front door: never another site (``//evil``)."""
    if value.startswith("/dashboard/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/dashboard"


def _login_page(request: Request, *, next_: str, error: str = "", status: int = 200) -> Response:
    token = new_login_csrf()
    response = render(
        "dashboard/login.html",
        viewer=None,
        status_code=status,
        title="Sign in",
        csrf_token=token,
        next=_safe_next(next_),
        error=error,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/dashboard/login",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )
    return response


@router.get("")
async def front_door(viewer: Viewer) -> Response:
    first = "/dashboard/leads" if viewer.role == Role.sales else "/dashboard/campaigns"
    return RedirectResponse(first, status_code=303)


@router.get("/login")
async def login_form(request: Request, next: str = "/dashboard") -> Response:
    return _login_page(request, next_=next)


@router.post("/login")
async def login(
    request: Request,
    engine: EngineDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/dashboard",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _login_page(
            request,
            next_=next,
            status=403,
            error="The sign-in form expired. Please try again.",
        )
    limits = login_limits(request)
    attempt = await run_in_threadpool(limits.attempt, client_address(request) or "unknown", email)
    if not attempt.allowed:
        response = _login_page(
            request,
            next_=next,
            status=429,
            error="Too many sign-in attempts. Please wait a few minutes and try again.",
        )
        response.headers["Retry-After"] = retry_after(attempt.wait)
        return response

    def check() -> str | None:
        with session_scope(engine) as session:
            user = users.authenticate(session, email, password)
            token = users.start_session(session, user) if user is not None else None
        if token is not None:
            limits.succeeded(attempt)
        return token

    token = await run_in_threadpool(check)
    if token is None:
        return _login_page(
            request, next_=next, status=401, error="That email and password do not match."
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(users.SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard/login")
    return response


@router.post("/logout")
async def logout(request: Request, engine: EngineDep, _: CsrfChecked) -> Response:
    token = request.cookies.get(COOKIE, "")

    def end() -> None:
        with session_scope(engine) as session:
            users.end_session(session, token)

    await run_in_threadpool(end)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response
