"""The broadcast language: ``broadcasts/NAME.yaml`` loads with the workspace, every mistake is
reported at its file, line and field with every other problem of the workspace, and the plan the
engine gets is exactly what the file says, versioned by its text and its template files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from campaigns import CampaignError, load_workspace
from campaigns.broadcast_check import _CONTACTS, audience_problem
from campaigns.broadcasts import Broadcast, BroadcastPlan, compile_broadcast
from campaigns.templates import content_hash
from campaigns.workspace import Workspace
from contacts.models import Contact  # noqa: F401  (registers the contacts table)
from drip.settings import Settings
from emails.lint import send_errors
from tests.support import copy_workspace

FULL = """\
id: spring-sale
name: Spring sale
description: Everything a broadcast can say.
email:
  template: tips
  subject: "Spring sale, {{ contact.first_name | default('friend') }}"
  preheader: Ten days only.
  from: Acme Deals <deals@acme.example>
  reply_to: help@acme.example
  track: false
audience: 'contact.score >= 10 and has_tag("customer") and not contact.country == "FR"'
topic: deals
send_at: 2026-03-20T09:30:00+01:00
rate: 250
frequency_cap: {max: 3, per: 7d}
ab_test:
  sample: 20
  metric: clicks
  wait: 6h
  variants:
    - {id: short, subject: Spring sale}
    - {id: story, template: we-miss-you, preheader: A story from the trail}
utm:
  domains: [Acme.Example]
"""

SIMPLE = """\
id: news
name: News
email: {template: tips, subject: Hello}
"""


def _root(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of the demo workspace with these broadcast files (name -> text) added."""
    root = copy_workspace(tmp_path)
    for name, text in files.items():
        (root / "broadcasts" / f"{name}.yaml").write_text(text)
    return root


def _problems(root: Path) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        load_workspace(root)
    return [str(p) for p in caught.value.problems]


def test_a_broadcast_compiles_to_the_plan_the_engine_gets(tmp_path: Path) -> None:
    root = _root(tmp_path, {"spring-sale": FULL})
    ws = load_workspace(root)
    assert set(ws.broadcasts) == {"spring-sale", "black-friday", "newsletter-december"}
    plan = ws.broadcast_plans["spring-sale"]
    texts = {n: (root / "emails" / f"{n}.mjml").read_text() for n in ("tips", "we-miss-you")}
    expected = {
        "broadcast_id": "spring-sale",
        "name": "Spring sale",
        "version": plan.version,
        "template": "tips",
        "subject": "Spring sale, {{ contact.first_name | default('friend') }}",
        "preheader": "Ten days only.",
        "from_addr": "Acme Deals <deals@acme.example>",
        "reply_to": "help@acme.example",
        "track": False,
        "audience": 'contact.score >= 10 and has_tag("customer") and not contact.country == "FR"',
        "topic": "deals",
        "send_at": "2026-03-20T09:30:00+01:00",
        "local_time": False,
        "rate": 250.0,
        "cap_max": 3,
        "cap_seconds": 7 * 86400.0,
        "variants": [
            {
                "id": "short",
                "subject": "Spring sale",
                "template": "tips",
                "preheader": "Ten days only.",
            },
            {
                "id": "story",
                "subject": "Spring sale, {{ contact.first_name | default('friend') }}",
                "template": "we-miss-you",
                "preheader": "A story from the trail",
            },
        ],
        "ab_sample_percent": 20,
        "ab_metric": "clicks",
        "ab_wait_seconds": 6 * 3600.0,
        "utm": {
            "source": "drip",
            "medium": "email",
            "campaign": "spring-sale",
            "content": "",
            "term": "",
            "domains": ["acme.example"],
        },
        "templates": {name: {f"{name}.mjml": content_hash(text)} for name, text in texts.items()},
    }
    assert plan.to_dict() == expected
    # the template texts go into the workspace, as a campaign's do (a send stores them)
    assert {ws.template_texts[content_hash(t)] for t in texts.values()} == set(texts.values())
    # JSON-able: what the workflow input and the send's row hold comes back equal
    assert BroadcastPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    # UTM content: the variant, or "email" without a test; campaign: the broadcast's id
    assert plan.utm_for("story")["content"] == "story"
    assert plan.utm_for("")["content"] == "email"
    assert ws.broadcast_plans["newsletter-december"].utm_for("") == {}


def test_a_plain_broadcast_gets_the_defaults(tmp_path: Path) -> None:
    ws = load_workspace(_root(tmp_path, {"news": SIMPLE}))
    plan = ws.broadcast_plans["news"]
    assert (plan.audience, plan.topic, plan.send_at, plan.local_time) == ("", "", "", False)
    assert (plan.rate, plan.cap_max, plan.variants, plan.utm) == (0.0, 0, [], {})
    assert (plan.from_addr, plan.reply_to, plan.track, plan.preheader) == ("", "", True, "")
    assert list(plan.templates) == ["tips"]


def test_utm_values_given_are_kept(tmp_path: Path) -> None:
    text = SIMPLE + "utm: {source: news, medium: mail, campaign: q4, content: body, term: x}\n"
    plan = load_workspace(_root(tmp_path, {"news": text})).broadcast_plans["news"]
    assert plan.utm_for("") == {
        "source": "news",
        "medium": "mail",
        "campaign": "q4",
        "content": "body",
        "term": "x",
        "domains": [],
    }


def test_the_version_follows_the_file_and_its_templates(tmp_path: Path) -> None:
    root = _root(tmp_path, {"news": SIMPLE})
    first = load_workspace(root).broadcast_plans
    assert load_workspace(root).broadcast_plans == first  # same files, same version
    tips = root / "emails" / "tips.mjml"
    tips.write_text(tips.read_text().replace("Happy walking", "Happy hiking"))
    second = load_workspace(root).broadcast_plans
    assert second["news"].version != first["news"].version
    assert second["news"].templates != first["news"].templates
    # a broadcast that does not send tips keeps its version
    assert second["black-friday"].version == first["black-friday"].version
    partial = root / "emails" / "partials" / "shop-note.mjml"
    partial.write_text(partial.read_text().replace("Bristol", "Bath"))
    third = load_workspace(root).broadcast_plans
    assert third["newsletter-december"].version != second["newsletter-december"].version
    assert third["news"].version == second["news"].version
    (root / "broadcasts" / "news.yaml").write_text(SIMPLE.replace("Hello", "Hello again"))
    assert load_workspace(root).broadcast_plans["news"].version != third["news"].version


#: Each broken broadcast (file name -> text) and the exact problems it gives.
BROKEN: dict[str, tuple[str, list[str]]] = {
    "unknown-key": (
        "id: unknown-key\nname: N\nemail:\n  template: tips\n  subjct: Hello\nsegment: x\n",
        [
            "email.subject: required field is missing",
            ":5:3: email.subjct: unknown key 'subjct' (did you mean 'subject'?)",
            ":6:1: segment: unknown key 'segment'",
        ],
    ),
    "named-otherwise": (
        "id: news\nname: N\nemail: {template: tips, subject: Hello}\n",
        [":1:5: id: broadcast id 'news' must match the file name 'named-otherwise'"],
    ),
    "unknown-template": (
        "id: unknown-template\nname: N\nemail: {template: tipz, subject: Hello}\n"
        "ab_test:\n  sample: 10\n  wait: 2h\n  variants:\n"
        "    - {id: a, subject: A}\n    - {id: b, template: nope}\n",
        [
            ":3:19: email.template: template 'tipz' does not exist (did you mean 'tips'?)",
            ":9:25: ab_test.variants.b.template: template 'nope' does not exist (known: ",
        ],
    ),
    "unknown-topic": (
        "id: unknown-topic\nname: N\nemail: {template: tips, subject: Hello}\ntopic: deal\n",
        [":4:8: topic: topic 'deal' is not in workspace.yaml topics (did you mean 'deals'?)"],
    ),
    "audience-syntax": (
        "id: audience-syntax\nname: N\nemail: {template: tips, subject: Hello}\n"
        "audience: 'contact.score => 5'\n",
        [":4:26: audience: unknown operator '=>' (did you mean '>='?)"],
    ),
    "audience-events": (
        "id: audience-events\nname: N\nemail: {template: tips, subject: Hello}\n"
        'audience: \'has_tag("vip") and opened("welcome")\'\n',
        [
            ":4:31: audience: opened(...) is not stored on the contact and cannot be used "
            "to filter contacts"
        ],
    ),
    "audience-properties": (
        "id: audience-properties\nname: N\nemail: {template: tips, subject: Hello}\n"
        "audience: properties.total > 5\n",
        [
            ":4:11: audience: properties.total is not stored on the contact and cannot be "
            "used to filter contacts"
        ],
    ),
    "local-now": (
        "id: local-now\nname: N\nemail: {template: tips, subject: Hello}\n"
        "in_contact_timezone: true\n",
        [":4:22: in_contact_timezone: needs a send_at time (2026-11-27T09:00:00), not 'now'"],
    ),
    "local-zoned": (
        "id: local-zoned\nname: N\nemail: {template: tips, subject: Hello}\n"
        "send_at: 2026-12-10T09:00:00+01:00\nin_contact_timezone: true\n",
        [
            ":4:10: send_at: with in_contact_timezone, send_at is a wall-clock time without a "
            "zone (2026-11-27T09:00:00): each contact's own zone applies"
        ],
    ),
    "naive": (
        "id: naive\nname: N\nemail: {template: tips, subject: Hello}\n"
        "send_at: 2026-12-10T09:00:00\n",
        [
            ":4:10: send_at: needs a time zone (2026-11-27T09:00:00+01:00), "
            "or in_contact_timezone: true"
        ],
    ),
    "not-a-time": (
        "id: not-a-time\nname: N\nemail: {template: tips, subject: Hello}\nsend_at: tomorrow\n",
        [":4:10: send_at: must be 'now' or an ISO 8601 time, e.g. 2026-11-27T09:00:00+01:00"],
    ),
    "rate-zero": (
        "id: rate-zero\nname: N\nemail: {template: tips, subject: Hello}\nrate: 0\n",
        [":4:7: rate: must be more than 0.0"],
    ),
    "ab-local": (
        "id: ab-local\nname: N\nemail: {template: tips, subject: Hello}\n"
        'send_at: "2026-12-10 09:00"\nin_contact_timezone: true\n'
        "ab_test:\n  sample: 10\n  wait: 2h\n  variants:\n"
        "    - {id: a, subject: A}\n    - {id: b, subject: B}\n",
        [
            ":7:3: ab_test: an A/B test cannot be sent in each contact's time zone: the winner "
            "would be picked before most zones received the test"
        ],
    ),
    "ab-bounds": (
        "id: ab-bounds\nname: N\nemail: {template: tips, subject: Hello}\n"
        "ab_test:\n  sample: 60\n  metric: conversions\n  wait: 0h\n  variants:\n"
        "    - {id: a, subject: A}\n",
        [
            ":5:11: ab_test.sample: must be at most 50",
            ":6:11: ab_test.metric: must be 'opens' or 'clicks'",
            ":7:9: ab_test.wait: '0h' must be longer than zero",
            ":9:5: ab_test.variants: needs at least 2 items",
        ],
    ),
    "ab-ids": (
        "id: ab-ids\nname: N\nemail: {template: tips, subject: Hello}\n"
        "ab_test:\n  sample: 10\n  wait: 2h\n  variants:\n"
        "    - {id: a, subject: A}\n    - {id: a, subject: B}\n",
        [":9:12: ab_test.variants.a.id: variant id 'a' is used by an earlier variant"],
    ),
    "ab-variant-shape": (
        "id: ab-variant-shape\nname: N\nemail: {template: tips, subject: Hello}\n"
        "ab_test:\n  sample: 10\n  wait: 2h\n  variants:\n"
        "    - {id: email, subject: A}\n    - {id: b}\n",
        [
            ":8:12: ab_test.variants.email.id: 'email' names the email without a test; give "
            "the variant another id",
            ":9:7: ab_test.variants.b: a variant changes 'subject', 'template' or 'preheader'",
        ],
    ),
    "ab-same-email": (
        "id: ab-same-email\nname: N\nemail: {template: tips, subject: Hello}\n"
        "ab_test:\n  sample: 10\n  wait: 2h\n  variants:\n"
        "    - {id: a, subject: Hello}\n    - {id: b, template: tips}\n",
        [":9:12: ab_test.variants.b.id: variant 'b' sends the same email as 'a'"],
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_mistake_is_reported_at_its_file_line_and_field(tmp_path: Path, name: str) -> None:
    text, expected = BROKEN[name]
    found = _problems(_root(tmp_path, {name: text}))
    prefix = f"acme/broadcasts/{name}.yaml"
    assert all(p.startswith(prefix + ":") for p in found), found
    assert len(found) == len(expected), found
    for problem, want in zip(found, expected, strict=True):
        assert want in problem, (problem, want)
        if want.startswith(":"):
            assert problem.startswith(prefix + want.split(" ")[0]), (problem, want)


def test_every_problem_of_every_file_comes_at_once(tmp_path: Path) -> None:
    """Broken broadcasts, a broken campaign and a broken workspace.yaml: one list. With
    workspace.yaml broken the topics are unknown, so a topic is not judged against nothing."""
    root = _root(
        tmp_path,
        {
            "unknown-topic": BROKEN["unknown-topic"][0],
            "naive": BROKEN["naive"][0],
            "audience-events": BROKEN["audience-events"][0],
        },
    )
    welcome = root / "campaigns" / "welcome.yaml"
    welcome.write_text(welcome.read_text().replace("timeout: 2d", "timeout: 2 dayz"))
    found = _problems(root)
    files = [p.split(":")[0] for p in found]
    assert files == [
        "acme/campaigns/welcome.yaml",
        "acme/broadcasts/audience-events.yaml",
        "acme/broadcasts/naive.yaml",
        "acme/broadcasts/unknown-topic.yaml",
    ]
    config = root / "workspace.yaml"
    config.write_text(config.read_text().replace("postal_address:", "postal_adress:"))
    found = _problems(root)
    assert not any("unknown-topic.yaml" in p for p in found)
    assert any(p.startswith("acme/workspace.yaml:") for p in found)
    assert any(p.startswith("acme/broadcasts/naive.yaml:4:10:") for p in found)


def test_an_empty_or_missing_folder_is_no_broadcasts(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    for path in (root / "broadcasts").iterdir():
        path.unlink()
    assert load_workspace(root).broadcasts == {}
    (root / "broadcasts").rmdir()
    ws = load_workspace(root)
    assert (ws.broadcasts, ws.broadcast_plans) == ({}, {})


def test_an_unreadable_yaml_file_is_a_problem_with_its_line(tmp_path: Path) -> None:
    found = _problems(_root(tmp_path, {"news": SIMPLE + "audience: [unclosed\n"}))
    assert len(found) == 1 and found[0].startswith("acme/broadcasts/news.yaml:5:")


def test_the_audience_check_knows_the_real_contacts_columns() -> None:
    """The check compiles audiences against its own copy of the columns (this package imports
    nothing of ``contacts``); it must be the table a send selects from."""
    real = SQLModel.metadata.tables["contacts"]
    for column in _CONTACTS.columns:
        assert column.name in real.columns, column.name
        real_type = real.columns[column.name].type
        assert real_type._type_affinity is column.type._type_affinity, column.name
    for good in ('contact.email ends_with "@acme.example"', "contact.plan exists", "score > 1"):
        assert audience_problem(good.replace("score", "contact.score")) is None


def test_a_model_built_in_code_is_held_to_the_same_rules() -> None:
    """The engine's tests build broadcasts in code: the coherence rules hold there too."""
    email = {"template": "tips", "subject": "Hello"}
    with pytest.raises(ValueError, match="needs a time zone"):
        Broadcast.model_validate(
            {"id": "x", "name": "X", "email": email, "send_at": "2026-12-10T09:00:00"}
        )
    plan = compile_broadcast(Broadcast.model_validate({"id": "x", "name": "X", "email": email}))
    assert (plan.template, plan.templates, plan.version) == ("tips", {}, plan.version)
    assert (
        compile_broadcast(Broadcast.model_validate({"id": "x", "name": "X", "email": email}))
        == plan
    )


def test_templates_and_subjects_that_fail_every_send_are_found(
    tmp_path: Path, settings: Settings
) -> None:
    """As for campaigns, ``drip campaigns validate`` renders what the broadcasts send: a broken
    variant subject is reported at its line in the broadcast file, a broken template at its."""
    root = _root(
        tmp_path,
        {
            "news": "id: news\nname: N\nemail: {template: broken, subject: Hello}\n",
            "split": "id: split\nname: N\nemail: {template: tips, subject: Hello}\n"
            "ab_test:\n  sample: 10\n  wait: 2h\n  variants:\n"
            "    - {id: a, subject: 'Hi {{ contact.first_name'}\n"
            "    - {id: b, preheader: Other}\n",
        },
    )
    (root / "emails" / "broken.mjml").write_text(
        "<mj-section>\n  <mj-column>\n    <mj-text>{% if %}</mj-text>\n"
        "  </mj-column>\n</mj-section>\n"
    )
    ws: Workspace = load_workspace(root)
    found = [str(f) for f in send_errors(ws, settings.model_copy(update={"workspace": root}))]
    assert any(f.startswith(f"{root}/emails/broken.mjml:3: error syntax") for f in found), found
    assert any(f.startswith(f"{root}/broadcasts/split.yaml:8: error syntax") for f in found), found
    assert not any("split.yaml:9" in f for f in found)
