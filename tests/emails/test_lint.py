"""``emails.lint``: each rule fires on a small bad template in a copy of the demo workspace, at the
author's line, and the demo workspace itself lints clean."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from campaigns.workspace import load_workspace
from drip.settings import Settings
from emails import RenderedEmail
from emails.lint import Finding, lint_rendered, lint_workspace
from tests.support import EXAMPLES, ROOT, copy_workspace, venv_binary

ADDRESS = "Acme Outdoor Ltd, 1 Harbour Street, Bristol BS1 4XX, United Kingdom"


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": tmp_path / ".drip",
        "public_base_url": "http://testserver",
        "secret_key": "test-secret-key-not-for-production",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def _section(body: str) -> str:
    return f"<mj-section>\n  <mj-column>\n{body}\n  </mj-column>\n</mj-section>\n"


def _text(body: str) -> str:
    return _section(f"    <mj-text>\n{body}\n    </mj-text>")


CAMPAIGN = """\
id: custom
name: Custom
trigger:
  form: {form}
steps:
  - id: send
    send_email:
      template: custom
      subject: "{subject}"
      preheader: "{preheader}"
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_workspace(tmp_path / "ws")


def _lint(
    root: Path,
    source: str,
    *,
    subject: str = "Hello",
    preheader: str = "",
    form: str = "newsletter",
    settings: Settings | None = None,
    used: bool = True,
) -> list[Finding]:
    """Findings of template ``custom`` (sent by campaign ``custom`` unless ``used`` is false)."""
    (root / "emails" / "custom.mjml").write_text(source, encoding="utf-8")
    if used:
        (root / "campaigns" / "custom.yaml").write_text(
            CAMPAIGN.format(subject=subject, preheader=preheader, form=form)
        )
    workspace = load_workspace(root)
    return lint_workspace(workspace, settings or _settings(root.parent), ["custom"])


def _rules(found: list[Finding]) -> list[tuple[int, str, str]]:
    return [(f.line, f.severity, f.rule) for f in found]


def test_the_demo_workspace_lints_clean(tmp_path: Path) -> None:
    assert lint_workspace(load_workspace(EXAMPLES), _settings(tmp_path)) == []


def test_a_clean_template_has_no_findings(root: Path) -> None:
    found = _lint(root, _text("<p>Hi {{ contact.first_name | default('there') }}</p>"))
    assert found == []


def test_images_without_alt_text_are_errors_and_an_empty_alt_is_decorative(root: Path) -> None:
    source = _section(
        '    <mj-image src="https://cdn.example/hero.png" />\n'
        '    <mj-image src="https://cdn.example/rule.png" alt="" />\n'
        '    <mj-image src="https://cdn.example/boot.png" alt="A walking boot" />\n'
        '    <mj-text><img src="https://cdn.example/icon.png"></mj-text>'
    )
    found = _lint(root, source)
    assert _rules(found) == [(3, "error", "missing-alt"), (6, "error", "missing-alt")]
    assert str(found[0]) == (
        f"{root}/emails/custom.mjml:3: error missing-alt: <mj-image> has no alt text, so clients "
        "that block images and screen readers show nothing useful: describe the image, or write "
        'alt="" if it is decorative'
    )
    assert "<img>" in found[1].message


def test_http_links_and_images_are_warnings(root: Path) -> None:
    source = _section(
        '    <mj-image src="http://cdn.example/hero.png" alt="Hero" />\n'
        '    <mj-button href="http://acme.example/shop">Shop</mj-button>\n'
        "    <mj-text>\n"
        '      <a href="https://acme.example/ok">fine</a> <a href="mailto:a@b.example">m</a>\n'
        '      <a href="{{ unsubscribe_url }}">templated</a> <a href="HTTP://ACME.EXAMPLE/x">x</a>\n'
        "    </mj-text>"
    )
    found = _lint(root, source)
    assert _rules(found) == [
        (3, "warning", "insecure-image"),
        (4, "warning", "insecure-link"),
        (7, "warning", "insecure-link"),
    ]
    assert found[0].message.endswith("http://cdn.example/hero.png")
    assert found[1].message == "link is not https: http://acme.example/shop"


def test_names_outside_the_render_context_are_errors_at_their_line(root: Path) -> None:
    source = _text(
        "Hi {{ first_name }}, from {{ workspace.phone }}\n"
        "{% set greeting = 'Hello' %}{{ greeting }}\n"
        "{% for tip in ['a', 'b'] %}{{ tip }} {{ loop.index }}{% endfor %}\n"
        "{{ unsubscribe_url }} {{ subject }} {{ preheader }} {{ step_id }}\n"
        "{{ range(3) | list }}"
    )
    found = _lint(root, source)
    assert _rules(found) == [
        (4, "error", "unresolved-variable"),
        (4, "error", "unresolved-variable"),
        (8, "error", "unresolved-variable"),
    ]
    messages = [f.message for f in found]
    assert "'first_name' is not defined in emails (did you mean contact.first_name?)" in messages
    assert "workspace.phone is not defined (it has name and postal_address)" in messages
    assert "'range' is not defined in emails" in messages
    # The sample render fails too, but the static finding already says why and where.
    assert not any(f.rule == "render-error" for f in found)


def test_contact_fields_that_may_be_missing_are_warnings(root: Path) -> None:
    source = _text(
        "{{ contact.company }}\n"
        "{{ contact.city | default('somewhere') }} {{ contact.email }}\n"
        "{% if contact.plan %}{{ contact.plan | upper }}{% endif %}\n"
        "{% if not contact.team %}solo{% else %}{{ contact.team }}{% endif %}\n"
        "{{ contact.role if contact.role is defined else 'guest' }}\n"
        "{% if contact.visits and contact.visits > 3 %}loyal{% endif %}\n"
        "{% if contact.score > 3 %}keen{% endif %}\n"
        "{{ contact['nickname'] }}"
    )
    found = _lint(root, source)
    assert _rules(found) == [
        (4, "warning", "optional-field"),
        (10, "warning", "optional-field"),
        (11, "warning", "optional-field"),
    ]
    assert found[0].message == (
        "contacts without company fail to render this email: write "
        "{{ contact.company | default('...') }} or guard it with {% if contact.company %}"
    )
    assert "without score" in found[1].message and "without nickname" in found[2].message


def test_fields_the_trigger_form_requires_are_always_there(root: Path) -> None:
    form = (root / "forms" / "newsletter.yaml").read_text()
    form = form.replace(
        "label: First name\n    type: text", "label: First name\n    type: text\n    required: true"
    )
    (root / "forms" / "newsletter.yaml").write_text(form)
    source = _text("Hi {{ contact.first_name }}")
    assert _lint(root, source, form="newsletter") == []
    # The webinar form does not require it: contacts of that campaign may lack it.
    assert _rules(_lint(root, source, form="webinar")) == [(4, "warning", "optional-field")]


def test_subject_and_preheader_are_checked_at_their_line_in_the_campaign(root: Path) -> None:
    found = _lint(
        root,
        _text("Hello"),
        subject="Hi {{ contact.first_name }}",
        preheader="{{ subject }} and more",
    )
    campaign = str(root / "campaigns" / "custom.yaml")
    assert [(f.path, *r) for f, r in zip(found, _rules(found), strict=True)] == [
        (campaign, 9, "warning", "optional-field"),
        (campaign, 10, "error", "unresolved-variable"),
    ]


def test_a_render_failure_for_the_sample_contact_is_an_error(root: Path) -> None:
    found = _lint(root, _text("{{ 1 // 0 }}"))
    assert _rules(found) == [(0, "error", "render-error")]
    assert "ZeroDivisionError" in found[0].message


def test_syntax_errors_are_reported_once_at_their_line(root: Path) -> None:
    found = _lint(root, _text("fine\n{% if %}broken{% endif %}"))
    assert _rules(found) == [(5, "error", "syntax")]


def test_html_over_gmails_clipping_limit_is_an_error_and_close_to_it_a_warning(
    root: Path,
) -> None:
    clipped = _lint(root, _text("x" * 100_000))
    assert _rules(clipped) == [(0, "error", "gmail-clipping")]
    assert "Gmail clips emails over 102 KB" in clipped[0].message
    close = _lint(root, _text("x" * 88_000))
    assert _rules(close) == [(0, "warning", "gmail-clipping")]


def test_a_blank_postal_address_is_an_error_in_workspace_yaml(root: Path) -> None:
    config = root / "workspace.yaml"
    text = config.read_text()
    config.write_text(text.replace(f'postal_address: "{ADDRESS}"', 'postal_address: "       "'))
    found = _lint(root, _text("Hello"))
    assert [(f.path, f.line, f.rule) for f in found] == [
        (str(config), 5, "postal-address"),
    ]


def test_a_rendered_email_without_the_postal_address_is_an_error() -> None:
    email = RenderedEmail(subject="S", html="<p>Acme Outdoor Ltd,<br>1 Harbour</p>", text="Hi\n")
    found = lint_rendered(email, "x.mjml", ADDRESS)
    assert [(f.severity, f.rule) for f in found] == [("error", "postal-address")] * 2
    assert "HTML part" in found[0].message and "text part" in found[1].message
    squashed = "<p>Acme Outdoor Ltd, 1 Harbour Street,\n  Bristol BS1 4XX, United Kingdom</p>"
    ok = RenderedEmail(subject="S", html=squashed, text=f"{ADDRESS}\n")
    assert lint_rendered(ok, "x.mjml", ADDRESS) == []


def test_a_template_no_campaign_sends_is_a_warning(root: Path) -> None:
    found = _lint(root, _text("Hello"), used=False)
    assert _rules(found) == [(0, "warning", "unused-template")]


def test_an_http_public_base_url_is_an_error_in_production_only(root: Path) -> None:
    production = _settings(root.parent, env="production", public_base_url="http://mail.example")
    found = _lint(root, _text("Hello"), settings=production)
    assert [(f.path, f.rule) for f in found] == [("DRIP_PUBLIC_BASE_URL", "insecure-base-url")]
    https = _settings(root.parent, env="production", public_base_url="https://mail.example")
    assert _lint(root, _text("Hello"), settings=https) == []


def test_included_partials_are_checked_in_their_own_file(root: Path) -> None:
    partials = root / "emails" / "partials"
    partials.mkdir(exist_ok=True)
    (partials / "hero.mjml").write_text(
        _section(
            '    <mj-image src="http://cdn.example/hero.png" />\n'
            "    <mj-text>{{ hero_title }}</mj-text>"
        )
    )
    found = _lint(root, '{% include "hero" %}\n' + _text("Hello"))
    partial = str(partials / "hero.mjml")
    # The render fails on hero_title too; the partial's finding already says where.
    assert [(f.path, f.line, f.rule) for f in found] == [
        (partial, 3, "missing-alt"),
        (partial, 3, "insecure-image"),
        (partial, 4, "unresolved-variable"),
    ]


def test_a_custom_layout_is_checked_in_its_own_file(root: Path) -> None:
    layouts = root / "emails" / "layouts"
    layouts.mkdir(exist_ok=True)
    builtin = (ROOT / "emails" / "layout.mjml").read_text()
    logo = _section('    <mj-image src="https://cdn.example/logo.png" />')
    (layouts / "branded.mjml").write_text(
        builtin.replace("<!-- drip:content -->", logo + "\n<!-- drip:content -->")
    )
    layout = str(layouts / "branded.mjml")
    line = builtin[: builtin.index("<!-- drip:content -->")].count("\n") + 3
    found = _lint(root, "{# layout: branded #}\n" + _text("Hello"))
    assert [(f.path, f.line, f.rule) for f in found] == [(layout, line, "missing-alt")]


def test_a_hand_written_text_part_is_checked_and_must_carry_the_postal_address(
    root: Path,
) -> None:
    (root / "emails" / "custom.txt").write_text(
        "Hi {{ contact.company }},\n\nSee http://acme.example/shop\n\n{{ unsubscribe_url }}\n"
    )
    found = _lint(root, _text("Hello"))
    text_part = str(root / "emails" / "custom.txt")
    assert [(f.path, f.line, f.severity, f.rule) for f in found] == [
        (str(root / "emails" / "custom.mjml"), 0, "error", "postal-address"),
        (text_part, 1, "warning", "optional-field"),
        (text_part, 3, "warning", "insecure-link"),
    ]
    assert "the text part lacks the workspace's postal address" in found[0].message


RECEIPT = _text(
    "<p>Order {{ data.order_id }}, total {{ data.total }}</p>\n"
    "{% for line in data.lines %}<p>{{ line.name }}</p>{% endfor %}\n"
    "{% if data.note %}<p>{{ data.note }}</p>{% endif %}"
)


def test_a_transactional_template_reading_data_lints_clean_and_is_not_unused(root: Path) -> None:
    """``data`` is the transactional API's per-call template data: the API checks its keys per
    call (a missing one is a 422), and the app calling it is what sends the template."""
    assert _lint(root, RECEIPT, used=False) == []


def test_an_undefined_name_beside_data_is_still_an_error(root: Path) -> None:
    found = _lint(root, RECEIPT + _text("{{ order_id }}"), used=False)
    assert _rules(found) == [(13, "error", "unresolved-variable")]


def test_a_campaign_sending_a_template_that_reads_data_is_an_error(root: Path) -> None:
    found = _lint(root, RECEIPT)
    assert ("error", "data-in-campaign") in [(f.severity, f.rule) for f in found]


def test_the_cli_lints_a_transactional_template_clean_with_strict(root: Path) -> None:
    (root / "emails" / "custom.mjml").write_text(RECEIPT, encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(root / ".drip"),
        "DRIP_WORKSPACE": str(root),
    }
    run = subprocess.run(
        [venv_binary("drip"), "emails", "lint", "--strict", "custom"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
