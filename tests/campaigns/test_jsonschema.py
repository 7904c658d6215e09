"""The JSON Schema editors use: current, accepting every example, refusing what it can see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from campaigns.jsonschema import (
    BROADCAST_SCHEMA_PATH,
    SCHEMA_PATH,
    broadcast_json_schema,
    broadcast_json_schema_text,
    campaign_json_schema,
    campaign_json_schema_text,
)
from campaigns.loader import load_yaml
from tests.campaigns.test_language import KITCHEN_SINK
from tests.support import EXAMPLES, ROOT

BROKEN = Path(__file__).parent / "broken"
VALIDATOR = Draft202012Validator(campaign_json_schema())

#: Broken files whose mistake is structural, so an editor can underline it while typing. The
#: others (a bad duration text, a missing target, a loop) need the loader's cross-checks.
SCHEMA_VISIBLE = [
    "unknown-key-typo",
    "two-kinds-in-a-step",
    "no-kind",
    "missing-subject",
    "branch-without-else",
    "split-one-variant",
    "notify-unknown-channel",
    "goto-max-times-zero",
    "trigger-two-kinds",
    "reentry-unknown",
    "no-steps",
    "uppercase-step-id",
    "empty-update",
]


def _data(path: Path) -> Any:
    return load_yaml(path).data


def test_the_committed_schema_is_current() -> None:
    committed = (ROOT / SCHEMA_PATH).read_text()
    assert committed == campaign_json_schema_text(), (
        f"run: .venv/bin/drip campaigns schema -o {SCHEMA_PATH}"
    )


def test_the_committed_broadcast_schema_is_current() -> None:
    committed = (ROOT / BROADCAST_SCHEMA_PATH).read_text()
    assert committed == broadcast_json_schema_text(), (
        f"run: .venv/bin/drip campaigns schema --broadcast -o {BROADCAST_SCHEMA_PATH}"
    )


def test_the_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(campaign_json_schema())
    Draft202012Validator.check_schema(broadcast_json_schema())


def test_the_broadcast_schema_sees_structure_and_send_times() -> None:
    """Editors underline what the loader refuses by shape; ``send_at`` without a zone is fine
    there (with in_contact_timezone it is right), which JSON Schema's date-time would refuse."""
    validator = Draft202012Validator(broadcast_json_schema())
    email = {"template": "tips", "subject": "Hi"}
    good = {"id": "news", "name": "News", "email": email}
    for send_at in ("now", "2026-12-10T09:00:00", "2026-12-10 09:00", "2026-12-10T09:00:00Z"):
        assert validator.is_valid({**good, "send_at": send_at}), send_at
    for bad in (
        {**good, "send_at": "tomorrow"},
        {**good, "segment": "x"},
        {**good, "email": {"template": "tips"}},
        {**good, "ab_test": {"sample": 10, "wait": "2h", "variants": [{"id": "a"}]}},
        {**good, "ab_test": {"sample": 90, "wait": "2h", "variants": [{"id": "a"}, {"id": "b"}]}},
        {**good, "rate": 0},
    ):
        assert not validator.is_valid(bad), bad


@pytest.mark.parametrize("path", sorted((EXAMPLES / "campaigns").glob("*.yaml")), ids=str)
def test_every_example_validates(path: Path) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(_data(path))]
    assert errors == []


def test_the_kitchen_sink_validates(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(KITCHEN_SINK)
    assert [e.message for e in VALIDATOR.iter_errors(_data(path))] == []


@pytest.mark.parametrize("name", SCHEMA_VISIBLE)
def test_structural_mistakes_are_refused(name: str) -> None:
    path = BROKEN / f"{name}.yaml"
    assert not VALIDATOR.is_valid(_data(path)), name
