"""schemathesis over the whole OpenAPI document of the production app: no 5xx, no lies.

Every operation the production app publishes gets generated requests, valid and invalid
(``GenerationMode.POSITIVE`` and ``NEGATIVE``), against the real app in-process: real SQLite
migrated and deployed, real settings, no Temporal (a closed port, so routing fails fast and
events are left for the sweep, as in an outage). Each response must

- not be a server error (``not_a_server_error``: no 5xx but the ones an operation documents,
  such as ``/readyz``'s 503);
- have a status code the operation documents (``status_code_conformance``);
- have a documented content type (``content_type_conformance``);
- match the documented schema for that status and type (``response_schema_conformance``).

The app is built with ``DRIP_ENV=production``, so the dev-only mailbox is not in the document.
Requests to the admin API (``/api``) carry a key with every scope and those to ``/v1`` a write
key, so the handlers behind authentication are fuzzed too; the ESP webhooks (``/esp``) get no
credentials and are only checked for their 404 (their signatures cannot be generated).
Generation is deterministic (the same cases on every run: a CI gate must not flicker) and
bounded to ``MAX_EXAMPLES`` per operation and mode, without shrinking; the failure report names
each broken operation with a curl command reproducing its first failing case.

The loop over operations is ours rather than ``schemathesis.pytest.from_fixture(...)
.parametrize()``: with pytest 9.2, schemathesis 4.32's lazy loader fails (``'Function' object
has no attribute '_nodeid'``), and one report for the whole API reads better anyway.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.support import free_port
from tests.webhooks._admin import make_key
from webhooks.main import create_app
from workflows.deploy import deploy_workspace

MAX_EXAMPLES = 25
WRITE_KEY = "fuzz-write-key"
#: cases run per generation mode, so the test can prove it exercised both
CALLS: dict[GenerationMode, int] = {}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def production_app_schema(
    settings: Settings, workspace: Workspace, engine: Engine
) -> Iterator[tuple[Any, dict[str, str]]]:
    """The schema of the production app, and the headers of an admin key with every scope."""
    production = settings.model_copy(
        update={
            "env": "production",
            "temporal_address": f"127.0.0.1:{free_port()}",
            "write_keys": [SecretStr(WRITE_KEY)],
        }
    )
    deploy_workspace(engine, workspace)
    app = create_app(production, workspace, engine=engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        database="none",
    )
    yield schema, make_key(engine)


def _credentials(path: str, admin: dict[str, str]) -> dict[str, str]:
    """Valid credentials, so the fuzzing reaches the handlers behind authentication."""
    if path.startswith("/api/"):
        return admin
    if path.startswith("/v1/"):
        return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    return {}


def _first_failure(
    schema: Any, operation: Any, mode: GenerationMode, admin: dict[str, str]
) -> str | None:
    """Run one operation in one mode; the first failing case as a report, or None."""
    found: list[str] = []
    declared = schema.raw_schema["paths"][operation.path][operation.method]["responses"]
    # a documented 5xx (``/readyz``'s 503) is part of the contract, and status_code_conformance
    # still refuses every 5xx an operation does not document
    checks = (
        [c for c in CHECKS if c is not not_a_server_error]
        if any(str(code).startswith("5") for code in declared)
        else CHECKS
    )

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the report names the input
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:  # a schemathesis.Case
        CALLS[mode] = CALLS.get(mode, 0) + 1
        if found:
            return
        try:
            case.call_and_validate(headers=_credentials(operation.path, admin), checks=checks)
        except (Exception, BaseExceptionGroup) as exc:  # a FailureGroup, or the app raising
            found.append(f"{case.as_curl_command()}\n{_describe(exc)}")

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body): nothing to test
        assert mode is GenerationMode.NEGATIVE, f"no valid case for {operation.label}"
    return found[0] if found else None


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {str(exc).strip()[:600]}"]
    if isinstance(exc, BaseExceptionGroup):
        parts += [f"  - {type(e).__name__}: {str(e).strip()[:600]}" for e in exc.exceptions]
    return "\n".join(parts)


def test_every_operation_answers_within_its_documented_contract(
    production_app_schema: tuple[Any, dict[str, str]],
) -> None:
    schema, admin = production_app_schema
    CALLS.clear()
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _first_failure(schema, operation, mode, admin)
            if failure is not None:
                failures[f"{operation.label} [{mode.value}]"] = failure
    assert operations >= 8, "the schema lost its operations"
    print(f"{operations} operations, cases run: {CALLS}")
    assert CALLS.get(GenerationMode.NEGATIVE, 0) > operations, "invalid requests were not sent"
    report = "\n\n".join(f"== {label}\n{text}" for label, text in sorted(failures.items()))
    assert not failures, f"{len(failures)} operation(s) broke their contract:\n\n{report}"
