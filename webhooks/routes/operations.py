"""Operations: liveness, readiness and Prometheus metrics, for load balancers and monitoring.

- ``GET /healthz``: the process answers (liveness). Touches nothing else, so a database or
  Temporal outage never gets healthy API processes restarted by an orchestrator.
- ``GET /readyz``: the database answers ``SELECT 1`` and Temporal answers a health check and
  describes ``DRIP_TEMPORAL_NAMESPACE``, each within ``READY_TIMEOUT_SECONDS``; else 503 problem
  JSON naming what failed (a missing namespace with the command that creates it: the server is
  healthy then, but every event would wait unrouted). Use it to take an
  instance out of a load balancer, not to restart it: the API still records form posts and
  tracking hits while Temporal is away (the worker's sweep routes them later).
- ``GET /metrics``: Prometheus text format (see ``webhooks.metrics``). Meant for the internal
  network: do not route it through the public proxy, or set ``DRIP_METRICS_TOKEN`` so it
  requires ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Engine

from drip.settings import __version__
from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from webhooks.journeys import JourneyGateway
from webhooks.metrics import CONTENT_TYPE, ApiMetrics
from webhooks.problems import PROBLEM_JSON, problem
from workflows.client import NamespaceNotFound, check_namespace

__all__ = ["READY_TIMEOUT_SECONDS", "router"]

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)

#: Each readiness check gets this long: a probe must answer well within its own timeout.
READY_TIMEOUT_SECONDS = 2.0

Check = Literal["ok", "failed"]


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, Check]


_NOT_READY = {
    "description": "a dependency is unreachable (problem JSON with `checks` and `errors`)",
    "content": {PROBLEM_JSON: {}},
}


@router.get("/healthz", summary="The process is up", response_model=Health)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


@router.get(
    "/readyz",
    summary="The database and Temporal answer",
    response_model=Readiness,
    responses={503: _NOT_READY},
)
async def readyz(engine: EngineDep, gateway: GatewayDep) -> JSONResponse:
    database, temporal = await asyncio.gather(_database(engine), _temporal(gateway))
    checks = {"database": _word(database), "temporal": _word(temporal)}
    if database is None and temporal is None:
        return JSONResponse({"status": "ready", "checks": checks})
    errors = {n: e for n, e in (("database", database), ("temporal", temporal)) if e}
    log.warning("not ready: %s", errors)
    failed = ", ".join(errors)
    return problem(503, "Service Unavailable", f"not ready: {failed}", checks=checks, errors=errors)


def _word(error: str | None) -> Check:
    return "ok" if error is None else "failed"


async def _database(engine: Engine) -> str | None:
    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        # a hung connection attempt keeps its thread, but the probe answers on time
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await run_in_threadpool(select_one)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        return _short(exc)
    return None


async def _temporal(gateway: JourneyGateway) -> str | None:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            # connects on first use, like the routes do; then the gRPC health service
            client = await gateway.client()
            healthy = await client.service_client.check_health(
                timeout=timedelta(seconds=READY_TIMEOUT_SECONDS)
            )
            if healthy:  # the client may predate the namespace's deletion: asked every time
                await check_namespace(client, timedelta(seconds=READY_TIMEOUT_SECONDS))
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_SECONDS:g} s"
    except NamespaceNotFound as exc:  # the message is the operator's instruction
        return str(exc)
    except Exception as exc:
        return _short(exc)
    return None if healthy else "the health check reports not serving"


def _short(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


@router.get(
    "/metrics",
    summary="Prometheus metrics (keep internal, or set DRIP_METRICS_TOKEN)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE.split(";")[0]: {}}},
        401: {"description": "DRIP_METRICS_TOKEN is set and the bearer token is missing or wrong"},
    },
)
async def metrics(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
        given = (authorization or "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            answer = problem(401, "Unauthorized", "a valid bearer token is required")
            answer.headers["WWW-Authenticate"] = "Bearer"
            return answer
    registry: ApiMetrics = request.app.state.metrics
    body = await run_in_threadpool(registry.exposition)
    return Response(body, media_type=CONTENT_TYPE)
