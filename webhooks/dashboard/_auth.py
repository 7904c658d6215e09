"""Who is signed in, what their role lets them see, and the CSRF check of every POST.

The session cookie holds a random token (only its hash is stored, ``contacts.users``); it is
HttpOnly (scripts never see it), SameSite=Lax (other sites' forms do not carry it on a POST) and
Secure when drip is served over https. SameSite alone is not CSRF protection (older browsers,
same-site subdomains), so every POST must also carry the session's CSRF token: a hidden form
field, or the ``X-CSRF-Token`` header that htmx sends. The sign-in form has no session yet, so
it uses a double-submit cookie instead.

Refusals are pages, not the API's JSON problems: not signed in redirects to the sign-in page,
a role that may not see a page gets a 403 page, a bad CSRF token a 403 page.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from contacts import users
from contacts.db import session_scope
from contacts.models import Role
from contacts.users import SignedIn
from webhooks._ratelimit import Limit, RateLimiter, Verdict
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep

__all__ = [
    "COOKIE",
    "LOGIN_CSRF_COOKIE",
    "CsrfChecked",
    "LoginLimits",
    "NotSignedIn",
    "Refused",
    "Viewer",
    "cookie_secure",
    "install_handlers",
    "login_limits",
    "new_login_csrf",
    "require",
]

COOKIE = "drip_session"
LOGIN_CSRF_COOKIE = "drip_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class NotSignedIn(Exception):
    """No valid session: the browser goes to the sign-in page and comes back after."""

    def __init__(self, back_to: str) -> None:
        self.back_to = back_to


class Refused(Exception):
    """A 403 page: a role that may not see this, or a POST without the right CSRF token."""

    def __init__(self, title: str, text: str, viewer: SignedIn | None) -> None:
        self.title, self.text, self.viewer = title, text, viewer


class LoginLimits:
    """Failed sign-in attempts per client address and per typed address: slows password
    guessing against one account from many addresses, and against many accounts from one.

    Only failures count. An attempt is counted before its password is checked (parallel
    guesses cannot all slip in under the limit) and taken back when it succeeds, so a user who
    signs in often is never locked out, and nobody can lock a user out by signing in as them.
    The counts are in the database (``webhooks._ratelimit``), shared by every API process.
    """

    def __init__(
        self, limiter: RateLimiter, per_ip: int = 20, per_email: int = 5, window: float = 300.0
    ) -> None:
        self.limiter = limiter
        self.ip = Limit("sign-in address", per_ip, window)
        self.email = Limit("sign-in email", per_email, window)

    def attempt(self, ip: str, email: str) -> Verdict:
        """Count an attempt; refused (``wait`` > 0) when either limit is reached. Database I/O:
        call it from a thread."""
        return self.limiter.hit((self.ip, ip), (self.email, email.strip().lower()))

    def succeeded(self, attempt: Verdict) -> None:
        """The attempt was right: it does not count."""
        self.limiter.refund(attempt)


def login_limits(request: Request) -> LoginLimits:
    limits: LoginLimits = request.app.state.dashboard_login_limits
    return limits


def cookie_secure(request: Request) -> bool:
    """Secure cookies when the visitor is on https: the request's scheme, which behind a
    TLS-terminating proxy is https only when a trusted proxy says so (``ClientAddressMiddleware``),
    or drip's public address, for when no proxy is trusted and the request looks like plain http."""
    return request.url.scheme == "https" or bool(
        request.app.state.settings.public_base_url.startswith("https://")
    )


async def _viewer(request: Request, engine: EngineDep) -> SignedIn:
    token = request.cookies.get(COOKIE, "")

    def load() -> SignedIn | None:
        with session_scope(engine) as session:
            return users.load_session(session, token)

    viewer = await run_in_threadpool(load) if token else None
    if viewer is None:
        path = request.url.path
        raise NotSignedIn(path if request.method == "GET" else "/dashboard")
    request.state.viewer = viewer
    return viewer


Viewer = Annotated[SignedIn, Depends(_viewer)]


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, SignedIn]]:
    """A dependency: the signed-in user, if their role is one of ``roles`` (admin always is)."""
    allowed = {Role.admin, *roles}

    async def check(viewer: Viewer) -> SignedIn:
        if viewer.role not in allowed:
            raise Refused(
                "Not for your role",
                f"This page is not available to the {viewer.role} role.",
                viewer,
            )
        return viewer

    return check


async def _csrf_checked(request: Request, viewer: Viewer) -> SignedIn:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()  # Starlette keeps it: the route's Form() reads it again
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not hmac.compare_digest(sent.encode(), viewer.csrf_token.encode()):
        raise Refused(
            "Form expired",
            "This form could not be checked. Reload the page and try again.",
            viewer,
        )
    return viewer


#: the signed-in user of a POST whose CSRF token matched their session's
CsrfChecked = Annotated[SignedIn, Depends(_csrf_checked)]


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def _not_signed_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotSignedIn)
    target = "/dashboard/login"
    if exc.back_to.startswith("/dashboard/") and exc.back_to != "/dashboard/login":
        target += "?next=" + quote(exc.back_to, safe="/")
    response = RedirectResponse(target, status_code=303)
    if request.headers.get("HX-Request"):  # htmx follows redirects in place; send it away
        response.headers["HX-Redirect"] = target
    return response


def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return render(
        "dashboard/message.html",
        viewer=exc.viewer,
        status_code=403,
        title=exc.title,
        text=exc.text,
    )


def install_handlers(app: FastAPI) -> None:
    """Register the page answers for the two refusals."""
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(Refused, _refused)
