"""schemathesis over the whole OpenAPI document of the app, with every check it has.

What ``st run --checks all`` does from outside, in-process and in the suite: schemathesis's own
engine runs its phases (examples, coverage: boundary values, missing and undeclared methods and
headers; fuzzing, positive and negative; stateful: one response's ids fed to the next request)
over every operation the app publishes, against the real app: real SQLite migrated and deployed,
real settings, no Temporal (a closed port, so routing fails fast and events are left for the
sweep, as in an outage). Every check of the installed schemathesis is on (``checks=all``): no
5xx, documented statuses, content types, headers and bodies; schema-valid data accepted and
invalid data refused; 405 with a true ``Allow`` for an undeclared method; and the rest.

The app runs in the dev environment, whose document is the production one plus the dev mailbox.
Requests to the admin API (``/api``) carry a key with every scope and those to ``/v1`` a write
key, so the handlers behind authentication are fuzzed too; the ESP webhooks (``/esp``) get no
credentials (their signatures cannot be generated) and answer their 404. Generation is
deterministic (a fixed seed, no example database: a CI gate must not flicker) and bounded to
``MAX_EXAMPLES`` per operation; the failure report names each broken operation and check with
a curl command reproducing it.

Some answers depend on what is stored or on rules no JSON schema can state, so a schema-valid
request may rightly be refused there; ``STATE_DEPENDENT`` lists each such operation, the status
it may give valid data, and why. Everything else any check finds fails the test.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.support import free_port
from tests.webhooks._admin import make_key
from webhooks.main import create_app
from workflows.deploy import deploy_workspace

MAX_EXAMPLES = 20
WRITE_KEY = "fuzz-write-key"
#: the default statuses positive_data_acceptance allows schema-valid data
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]
#: path -> (what valid data may also get, why)
STATE_DEPENDENT: dict[str, tuple[list[str], str]] = {
    "/api/sales/reps": (["422"], "the rep's team must exist"),
    "/api/contacts/{contact_id}/owner": (["422"], "the owner must be a sales rep"),
    "/api/contacts/import": (["422"], "a CSV needs an 'email' column; no schema says so"),
    "/api/suppressions": (["422"], "an entry must be an address or a domain (e-mail syntax)"),
    "/api/suppressions/{entry}": (["422"], "an entry must be an address or a domain"),
    "/api/suppressions/import": (["422"], "a CSV needs an email_or_domain column"),
    "/api/sales/alerts": (["422"], "its cursor (time|id, base64) has no pattern to say it"),
    "/forms/{form_id}/confirm/{token}": (["400"], "a link's token is signed by us"),
    # the template must be one of the workspace's and data must hold what it reads
    # (emails.data_check); a valid one then needs Temporal, which is down here (503)
    "/api/messages": (["413", "422", "503"], "the template and its data are the workspace's"),
    "/api/messages/batch": (["422", "503"], "the template and its data are the workspace's"),
    # values are checked for what drip can store (control characters, e-mail syntax): a rule
    # of its own, see contacts.cleaning, that a JSON schema pattern cannot state whole
    "/api/contacts": (["422"], "e-mail syntax and stored values are checked by contacts"),
    "/api/contacts/{contact_id}": (["422"], "stored values are checked by contacts"),
    "/v1/identify": (["422"], "stored values are checked by contacts"),
    "/v1/track": (["422"], "stored values are checked by contacts"),
    "/v1/page": (["422"], "stored values are checked by contacts"),
    "/v1/screen": (["422"], "stored values are checked by contacts"),
    "/v1/batch": (["422"], "stored values are checked by contacts"),
    # an endpoint's URL must be https without userinfo, its event types drip's, its filter
    # the condition language, its owner an address and a secret whsec_ base64: no schema says
    "/api/webhooks": (["422"], "URL, event types, filter, owner and secret are checked"),
    "/api/webhooks/{endpoint_id}": (["422"], "URL, event types, filter and owner are checked"),
    "/api/webhooks/{endpoint_id}/rotate-secret": (["422"], "a secret is whsec_ and base64"),
    # a resend queues the delivery through Temporal, which is down here (503)
    "/api/webhooks/deliveries/{delivery_id}/resend": (["503"], "a resend needs Temporal"),
}


def _config() -> SchemathesisConfig:
    operations: list[dict[str, Any]] = [
        {
            "include-path": path,
            "checks": {"positive_data_acceptance": {"expected-statuses": _ACCEPTED + extra}},
        }
        for path, (extra, _) in STATE_DEPENDENT.items()
    ]
    # /readyz documents its 503 (Temporal is down here): a documented answer, not a crash;
    # so do the transactional sends, which start a Temporal workflow
    for path in (
        "/readyz",
        "/api/messages",
        "/api/messages/batch",
        "/api/webhooks/deliveries/{delivery_id}/resend",
    ):
        operations.append(
            {
                "include-path": path,
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
            }
        )
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261206,
            "cache": {"enabled": False},
            "checks": {"enabled": True},
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "operations": operations,
        }
    )
    config.projects.get_default().checks.update(included_check_names=["all"])
    return config


@pytest.fixture
def dev_app_schema(
    settings: Settings, workspace: Workspace, engine: Engine
) -> Iterator[tuple[Any, dict[str, str]]]:
    """The schema of the app (dev: the production document and the mailbox), and the headers
    of an admin key with every scope."""
    dev = settings.model_copy(
        update={
            "env": "dev",
            "temporal_address": f"127.0.0.1:{free_port()}",
            "write_keys": [SecretStr(WRITE_KEY)],
        }
    )
    deploy_workspace(engine, workspace)
    app = create_app(dev, workspace, engine=engine)
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=_config()), make_key(engine)


def _credentials(path: str, admin: dict[str, str]) -> dict[str, str]:
    """Valid credentials, so the fuzzing reaches the handlers behind authentication."""
    if path.startswith("/api/"):
        return admin
    if path.startswith("/v1/"):
        return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    return {}


def test_every_operation_answers_within_its_documented_contract(
    dev_app_schema: tuple[Any, dict[str, str]],
) -> None:
    schema, admin = dev_app_schema

    @schema.auth()
    class _Keys:
        """Each request gets the key of its API (schemathesis asks before every request)."""

        def get(self, case: Any, context: Any) -> str:
            return "keys"

        def set(self, case: Any, data: str, context: Any) -> None:
            credentials = _credentials(case.operation.path, admin)
            # a case testing a missing Authorization header keeps it missing
            if credentials and "authorization" not in {k.lower() for k in case.headers or {}}:
                case.headers = {**(case.headers or {}), **credentials}

    started = time.monotonic()
    failures: dict[tuple[str, str], str] = {}
    checked: set[str] = set()
    errors: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    checked.add(check.name)
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    key = (event.recorder.label, check.name)
                    if key not in failures:
                        interaction = event.recorder.interactions.get(case_id)
                        answer = interaction.response if interaction else None
                        body = answer.content[:300] if answer is not None else b""
                        status = answer.status_code if answer is not None else None
                        failures[key] = (
                            f"{check.failure_info.failure.title}: "
                            f"{check.failure_info.failure.message}\n"
                            f"got {status}: {body!r}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise AssertionError(f"schemathesis stopped: {event.exception!r}")
    elapsed = time.monotonic() - started
    print(f"{len(failures)} failure(s), checks seen: {sorted(checked)}, {elapsed:.0f} s")
    assert not errors, "schemathesis could not test:\n" + "\n".join(errors)
    # the run exercised the checks that need the coverage phase, not only the basic ones
    assert {"unsupported_method", "negative_data_rejection", "positive_data_acceptance"} <= checked
    report = "\n\n".join(f"== {op} [{check}]\n{text}" for (op, check), text in failures.items())
    assert not failures, f"{len(failures)} contract break(s):\n\n{report}"


#: the operations that start Temporal work: fuzzed again with Temporal up, where no 5xx is allowed
NEEDS_TEMPORAL = (
    "POST /api/messages",
    "POST /api/messages/batch",
    "POST /api/webhooks/deliveries/{delivery_id}/resend",
)


def test_the_routes_that_start_temporal_work_answer_no_5xx_while_it_is_up(
    settings: Settings, workspace: Workspace, engine: Engine, dev_env: Any
) -> None:
    """The run above is an outage (no Temporal), where these routes answer their documented
    503; here they are fuzzed again with a real Temporal dev server, and any 5xx fails."""
    live = settings.model_copy(
        update={"env": "dev", "temporal_address": dev_env.client.service_client.config.target_host}
    )
    deploy_workspace(engine, workspace)
    app = create_app(live, workspace, engine=engine)
    # only these operations: the document cut down to their paths (their schemas' refs kept)
    raw = app.openapi()
    wanted = {label.split(" ", 1)[1] for label in NEEDS_TEMPORAL}
    raw = {**raw, "paths": {p: ops for p, ops in raw["paths"].items() if p in wanted}}
    # one send the workspace can make (its receipt template and the data it reads), so the
    # examples phase reaches Temporal; the rest is generated
    send = raw["paths"]["/api/messages"]["post"]["requestBody"]["content"]["application/json"]
    send["example"] = {
        "template": "receipt",
        "to": {"email": "fuzz@example.com"},
        "subject": "Your receipt",
        "data": {"order_id": "A-1", "total": "1.00", "note": ""},
    }
    schema = schemathesis.openapi.from_dict(raw, config=_config())
    schema.app = app
    admin = make_key(engine)

    @schema.auth()
    class _Keys:
        def get(self, case: Any, context: Any) -> str:
            return "keys"

        def set(self, case: Any, data: str, context: Any) -> None:
            # schemathesis fills the security scheme with an empty token: replace that one
            headers = dict(case.headers or {})
            if headers.get("Authorization", "").strip() in ("", "Bearer"):
                case.headers = {**headers, **admin}

    statuses: dict[str, set[int]] = {label: set() for label in NEEDS_TEMPORAL}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.recorder.label in statuses:
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    statuses[event.recorder.label].add(interaction.response.status_code)
        elif isinstance(event, events.FatalError):
            raise AssertionError(f"schemathesis stopped: {event.exception!r}")
    assert all(statuses.values()), statuses  # each was fuzzed
    assert 202 in statuses["POST /api/messages"], statuses  # a send reached Temporal
    assert not [s for seen in statuses.values() for s in seen if s >= 500], statuses
