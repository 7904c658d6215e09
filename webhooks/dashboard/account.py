"""``/dashboard/account``: who you are signed in as, and changing your own password.

Every role has this page: a password is personal, and nobody should need an admin (or a shell)
to change theirs. Resetting a forgotten one stays an operator's job (``drip users password``).

Changing the password asks for the current one first, so a borrowed or stolen session cannot
lock its owner out. Those checks go through the sign-in limiter (``LoginLimits``) under the
same per-address budget as the sign-in form: a guesser gets no second, separate allowance for
one account's password by using this form. The new password follows the same rules as every
other (``contacts.users.check_password_rules``). Anything wrong answers 422 with the form again
and each problem beside its field, and nothing is changed; passwords are never written back
into the page. A change ends every other session of the user and keeps this one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from contacts import users
from contacts.db import session_scope
from contacts.models import User
from contacts.users import SignedIn
from webhooks._ratelimit import retry_after
from webhooks.dashboard._auth import COOKIE, CsrfChecked, Viewer, login_limits
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep
from webhooks.middleware import client_address

__all__ = ["router"]

router = APIRouter()

PAGE = "/dashboard/account"
#: the form's fields, which are also the keys of its error messages
CURRENT, NEW, REPEAT = "current_password", "new_password", "new_password_repeat"
WRONG_CURRENT = "That is not your current password."


def _page(
    viewer: SignedIn,
    *,
    errors: dict[str, str] | None = None,
    error: str = "",
    changed: bool = False,
    status: int = 200,
) -> Response:
    return render(
        "dashboard/account.html",
        viewer=viewer,
        status_code=status,
        title="Account",
        errors=errors or {},
        error=error,
        changed=changed,
        min_length=users.MIN_PASSWORD_LENGTH,
    )


def _new_password_errors(current: str, new: str, repeat: str) -> dict[str, str]:
    """What is wrong with the new password as typed, by field; no database, no limiter, so a
    form that only fails these does not count as a guess of the current password."""
    errors: dict[str, str] = {}
    try:
        users.check_password_rules(new)
    except users.InvalidUser as exc:
        message = str(exc)
        errors[NEW] = message[:1].upper() + message[1:] + "."
    else:
        if new == current:
            errors[NEW] = "The new password must differ from the current one."
    if new != repeat:
        errors[REPEAT] = "The two new passwords do not match."
    return errors


@router.get("/account")
async def account_page(viewer: Viewer, changed: bool = False) -> Response:
    return _page(viewer, changed=changed)


@router.post("/account/password")
async def change_password(
    request: Request,
    engine: EngineDep,
    viewer: CsrfChecked,
    current_password: Annotated[str, Form()] = "",
    new_password: Annotated[str, Form()] = "",
    new_password_repeat: Annotated[str, Form()] = "",
) -> Response:
    errors = _new_password_errors(current_password, new_password, new_password_repeat)
    if not current_password:
        errors[CURRENT] = "Type your current password."
    if errors:
        return _page(viewer, errors=errors, status=422)

    limits = login_limits(request)
    ip = client_address(request) or "unknown"
    attempt = await run_in_threadpool(limits.attempt, ip, viewer.email)
    if not attempt.allowed:
        response = _page(
            viewer,
            error="Too many password attempts. Please wait a few minutes and try again.",
            status=429,
        )
        response.headers["Retry-After"] = retry_after(attempt.wait)
        return response

    this_session = users.session_id(request.cookies.get(COOKIE, ""))

    def change() -> bool:
        with session_scope(engine) as session:
            user = session.get(User, viewer.user_id)
            if user is None or not users.password_matches(user, current_password):
                return False
            users.set_password(session, user, new_password, keep_session_id=this_session)
        limits.succeeded(attempt)  # only wrong guesses count
        return True

    if not await run_in_threadpool(change):
        return _page(viewer, errors={CURRENT: WRONG_CURRENT}, status=422)
    # a redirect, so reloading the page after the change does not post the form again
    return RedirectResponse(f"{PAGE}?changed=true", status_code=303)
