"""Operations: /healthz, /readyz against real SQLite and Temporal, /metrics, JSON logs, body cap."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.db import create_db_engine
from drip.logs import JsonFormatter
from drip.settings import Settings
from tests.support import api_client, free_port
from webhooks.journeys import JourneyGateway
from webhooks.main import create_app
from webhooks.problems import PROBLEM_JSON
from webhooks.routes import operations

# a guard against a hang, several times the checks' own timeout: not a speed assertion
HANG_GUARD = operations.READY_TIMEOUT_SECONDS * 5


@asynccontextmanager
async def _client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_healthz_answers_without_touching_dependencies(http: httpx.AsyncClient) -> None:
    r = await http.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["version"]


async def test_readyz_is_ready_with_the_database_and_temporal(
    settings: Settings, workspace: Workspace, engine: Engine, dev_env: WorkflowEnvironment
) -> None:
    async with api_client(settings, workspace, engine, dev_env.client) as http:
        r = await http.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "temporal": "ok"}}


async def test_readyz_connects_lazily_like_the_routes(
    settings: Settings, workspace: Workspace, engine: Engine, dev_env: WorkflowEnvironment
) -> None:
    """No client given (as in ``drip api``): readyz connects with the app's settings."""
    lazy = settings.model_copy(
        update={"temporal_address": dev_env.client.service_client.config.target_host}
    )
    async with api_client(lazy, workspace, engine) as http:
        r = await http.get("/readyz")
    assert r.status_code == 200, r.text


async def test_readyz_is_503_problem_when_temporal_is_unreachable(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    closed = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with api_client(closed, workspace, engine) as http, asyncio.timeout(HANG_GUARD):
        r = await http.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM_JSON
    problem = r.json()
    assert problem["status"] == 503 and problem["title"]
    assert problem["checks"] == {"database": "ok", "temporal": "failed"}
    assert "temporal" in problem["errors"] and "database" not in problem["errors"]


async def test_readyz_never_hangs_on_a_silent_temporal(
    settings: Settings, workspace: Workspace, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts and never answers (a black-holed address) costs one timeout."""

    async def never(self: JourneyGateway) -> Client:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(operations, "READY_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(JourneyGateway, "client", never)
    async with api_client(settings, workspace, engine) as http, asyncio.timeout(HANG_GUARD):
        r = await http.get("/readyz")
    assert r.status_code == 503
    assert "no answer within 0.2 s" in r.json()["errors"]["temporal"]


async def test_readyz_names_a_broken_database(
    settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "a-directory.db").mkdir()  # sqlite cannot open a directory as its file
    broken = create_db_engine(f"sqlite:///{tmp_path / 'a-directory.db'}")
    closed = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    try:
        async with _client(create_app(closed, workspace, engine=broken)) as http:
            r = await http.get("/readyz")
    finally:
        broken.dispose()
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": "failed", "temporal": "failed"}
    assert "OperationalError" in r.json()["errors"]["database"]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_by_route_template_and_status(
    http: httpx.AsyncClient,
) -> None:
    for _ in range(3):
        assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/forms/newsletter")).status_code == 200
    assert (await http.get("/forms/no-such-form")).status_code == 404
    assert (await http.get("/no/such/path")).status_code == 404
    assert (await http.get("/t/o/" + "a" * 22 + ".gif")).status_code == 200

    r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(r.text)

    def count(route: str, status: str) -> float:
        labels = frozenset({"method": "GET", "route": route, "status": status}.items())
        return samples.get(("drip_http_requests_total", labels), 0)

    assert count("/healthz", "200") == 3
    assert count("/forms/{form_id}", "200") == 1
    assert count("/forms/{form_id}", "404") == 1  # the template, never the raw path
    assert count("unmatched", "404") == 1
    labels = frozenset({"method": "GET", "route": "/healthz", "status": "200"}.items())
    assert samples[("drip_http_request_duration_seconds_count", labels)] == 3
    assert samples[("drip_tracking_hits_total", frozenset({"kind": "open"}.items()))] == 1
    assert not any("/t/" in dict(k[1]).get("route", "") for k in samples)  # no timing there
    assert samples[("drip_events_unrouted", frozenset())] == 0
    assert any(name == "drip_info" for name, _ in samples)


async def test_metrics_token_is_required_when_configured(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("s3cret")})
    async with api_client(guarded, workspace, engine) as http:
        denied = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        allowed = await http.get("/metrics", headers={"authorization": "Bearer s3cret"})
    assert denied.status_code == wrong.status_code == 401
    assert denied.headers["content-type"] == PROBLEM_JSON
    assert denied.headers["www-authenticate"] == "Bearer"
    assert allowed.status_code == 200 and "drip_http_requests_total" in allowed.text


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The ``drip.access`` lines, formatted as ``drip api`` does with DRIP_LOG_FORMAT=json."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("drip.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def test_json_access_lines_carry_the_request_id(
    http: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    given = await http.get("/forms/newsletter", headers={"x-request-id": "req-42.a_b"})
    made = await http.get("/healthz")
    hostile = await http.get("/healthz", headers={"x-request-id": 'a b"}\n{'})
    assert given.headers["x-request-id"] == "req-42.a_b"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] not in ("", 'a b"}\n{')  # replaced, not echoed

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["request_id"] == "req-42.a_b"
    assert first["level"] == "INFO" and first["logger"] == "drip.access"
    assert first["message"] == "GET /forms/newsletter 200"
    assert first["route"] == "/forms/{form_id}" and first["status"] == 200
    assert isinstance(first["duration_ms"], float) and first["time"].endswith("Z")
    assert lines[1]["request_id"] == made.headers["x-request-id"]
    assert lines[2]["request_id"] == hostile.headers["x-request-id"]


def test_json_formatter_keeps_extras_and_exceptions() -> None:
    logger = logging.getLogger("drip.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "drip.test", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info=sys.exc_info(),
            extra={"path": Path("/tmp/x")},
        )  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed x" and entry["level"] == "ERROR"
    assert entry["path"] == "/tmp/x" and "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry


@pytest.fixture
async def small_cap(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    capped = settings.model_copy(update={"max_body_bytes": 100})
    async with api_client(capped, workspace, engine) as http:
        yield http


async def test_a_body_over_the_cap_is_413_problem_by_content_length(
    small_cap: httpx.AsyncClient,
) -> None:
    body = {"email": "ann@example.com", "consent": True, "first_name": "A" * 200}
    r = await small_cap.post("/forms/newsletter", json=body)
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["status"] == 413 and "100 bytes" in r.json()["detail"]
    assert r.headers["x-request-id"]


async def test_a_streamed_body_over_the_cap_is_413_problem(small_cap: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b'{"padding": "' + b"x" * 40 + b'"}'

    r = await small_cap.post(
        "/forms/newsletter", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM_JSON


async def test_a_body_under_the_cap_goes_through(small_cap: httpx.AsyncClient) -> None:
    r = await small_cap.post("/forms/newsletter", json={"email": "ann@example.com"})
    assert r.status_code == 422  # consent missing: the route saw the body


async def test_openapi_documents_422_as_problem_json(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    answers = schema["paths"]["/forms/{form_id}"]["post"]["responses"]["422"]["content"]
    assert answers[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "application/json" not in answers
    assert "Problem" in schema["components"]["schemas"]


def test_drip_api_and_worker_log_json_in_production_by_default(settings: Settings) -> None:
    from drip.cli import _log_format, _structured_logs

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        assert _log_format(settings) == "text" and not _structured_logs(settings)
        production = settings.model_copy(update={"env": "production"})
        assert _log_format(production) == "json"
        forced_text = production.model_copy(update={"log_format": "text"})
        assert _log_format(forced_text) == "text"
        assert _structured_logs(production)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert logging.getLogger("uvicorn.error").propagate
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
