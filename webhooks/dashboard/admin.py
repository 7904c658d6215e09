"""``/dashboard/admin/...``: pages for admins only: the list of dashboard users (made and
disabled with ``drip users``) and the delivery problems (``delivery``); marketers and sales get
a 403 page here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from contacts import users
from contacts.db import session_scope
from contacts.users import SignedIn
from webhooks.dashboard import delivery, webhooks_out
from webhooks.dashboard._auth import require
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep

__all__ = ["router"]

router = APIRouter(prefix="/admin")
Admin = Annotated[SignedIn, Depends(require())]
router.include_router(delivery.router)
router.include_router(webhooks_out.router)


@router.get("/users")
async def users_page(viewer: Admin, engine: EngineDep) -> Response:
    def read() -> list[dict[str, object]]:
        with session_scope(engine) as session:
            return [
                {
                    "email": u.email,
                    "name": u.name,
                    "role": str(u.role),
                    "active": u.active,
                    "last_login_at": u.last_login_at,
                }
                for u in users.list_users(session)
            ]

    rows = await run_in_threadpool(read)
    return render("dashboard/users.html", viewer=viewer, title="Users", rows=rows)
