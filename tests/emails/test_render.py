"""Rendering the demo templates for a contact: personalisation, escaping, one-line subjects, the
compliance footer the layout adds around every fragment."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable

import pytest

from campaigns.workspace import Workspace
from contacts.models import Contact
from drip.settings import Settings
from emails import RenderedEmail, Renderer, TemplateError, build_message, verify_unsubscribe_token
from tests.emails.conftest import BASE, FRAGMENT, RenderFn, step

DEMO = ["welcome", "tips", "welcome-reminder"]
POSTAL = "Acme Outdoor Ltd, 1 Harbour Street, Bristol BS1 4XX, United Kingdom"


@pytest.mark.parametrize("template", DEMO)
def test_demo_templates_render_with_footer(
    render: RenderFn, ann: Contact, settings: Settings, template: str
) -> None:
    out = render(template, ann)
    assert out.html.lstrip().lower().startswith("<!doctype html>")
    assert "Acme Outdoor" in out.html  # the layout's header: the workspace name
    assert POSTAL in out.html and POSTAL in out.text
    token = out.unsubscribe_url.removeprefix(f"{BASE}/u/")
    assert out.unsubscribe_url == f"{BASE}/u/{token}"
    assert verify_unsubscribe_token(settings.secret(), token) == ann.id
    assert f'href="{out.unsubscribe_url}"' in out.html
    assert f"Unsubscribe ({out.unsubscribe_url})" in out.text
    assert "{{" not in out.html and "{%" not in out.html  # no Jinja left over
    # no MJML tag left over (a bare "mj-" can occur inside a random link token)
    assert re.search(r"</?mj-", out.html) is None


@pytest.mark.parametrize(
    ("template", "greeting"),
    [
        ("welcome", "Welcome to Acme Outdoor, Ann!"),
        ("tips", "Three trail tips, Ann"),
        ("welcome-reminder", "Hi Ann, your welcome is waiting"),
    ],
)
def test_first_name_personalises_body(
    render: RenderFn, ann: Contact, template: str, greeting: str
) -> None:
    out = render(template, ann)
    assert greeting in out.html
    assert greeting in out.text


@pytest.mark.parametrize("fields", [{}, {"first_name": None}, {"city": "Leeds"}])
@pytest.mark.parametrize(
    ("template", "greeting", "subject"),
    [
        ("welcome", "Welcome to Acme Outdoor, friend!", "Welcome to Acme Outdoor, friend"),
        ("tips", "Three trail tips, friend", "Three trail tips our guides swear by"),
        ("welcome-reminder", "Hi friend, your welcome is waiting", "Did you see this, friend?"),
    ],
)
def test_missing_first_name_falls_back_to_friend(
    render: RenderFn, template: str, greeting: str, subject: str, fields: dict[str, object]
) -> None:
    out = render(template, Contact(id=3, email="nameless@example.com", fields=fields))
    assert greeting in out.html
    assert out.subject == subject


def test_subject_and_preheader_are_personalised(render: RenderFn, ann: Contact) -> None:
    out = render("welcome", ann, preheader="Hello {{ contact.first_name }}, trail notes inside")
    assert out.subject == "Welcome to Acme Outdoor, Ann"
    assert out.preheader == "Hello Ann, trail notes inside"
    assert "<title>Welcome to Acme Outdoor, Ann</title>" in out.html
    assert "Hello Ann, trail notes inside" in out.html  # the hidden preview text


def test_contact_data_is_escaped_in_html(render: RenderFn) -> None:
    evil = Contact(
        id=4, email="eve@example.com", fields={"first_name": '<script>alert("x")</script>'}
    )
    out = render("welcome", evil)
    assert "<script>" not in out.html
    assert "Welcome to Acme Outdoor, &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;!" in out.html
    # in the <title> (from the subject) too
    assert "<title>Welcome to Acme Outdoor, &lt;script&gt;" in out.html
    # The subject is text, not HTML: the MIME layer encodes it, so no entities show up in it.
    assert out.subject == 'Welcome to Acme Outdoor, <script>alert("x")</script>'
    # and the text part shows what the contact typed
    assert 'Welcome to Acme Outdoor, <script>alert("x")</script>!' in out.text


def test_contact_data_cannot_break_out_of_an_attribute(
    render_source: Callable[..., RenderedEmail],
) -> None:
    source = FRAGMENT.format('<a href="https://acme.example/?n={{ contact.first_name }}">go</a>')
    who = Contact(id=1, email="a@example.com", fields={"first_name": '" onmouseover="x'})
    out = render_source(source, who, track=False)
    assert 'onmouseover="x' not in out.html
    assert "&#34; onmouseover=&#34;x" in out.html


@pytest.mark.parametrize(
    "first_name",
    [
        "Ann\r\nBcc: victim@example.com",
        "Ann\nBcc: victim@example.com",
        "Ann\rBcc: victim@example.com",
        "Ann\u2028Bcc: victim@example.com",  # str.splitlines() breaks here too
        "Ann\x85Bcc: victim@example.com",
        "Ann\x1eBcc: victim@example.com",
    ],
)
def test_subject_is_one_line_whatever_the_contact_data(
    render: RenderFn, settings: Settings, workspace: Workspace, first_name: str
) -> None:
    out = render(
        "welcome", Contact(id=5, email="ann@example.com", fields={"first_name": first_name})
    )
    assert "\n" not in out.subject and "\r" not in out.subject
    assert out.subject == "Welcome to Acme Outdoor, Ann Bcc: victim@example.com"
    data = build_message(
        out,
        from_addr=workspace.config.from_,
        to_addr="ann@example.com",
        reply_to=None,
        message_id="m1",
        domain="acme.example",
        unsubscribe_mailto=None,
    )
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Bcc"] is None
    assert msg["Subject"] == out.subject  # kept, harmlessly, inside the subject


def test_multiline_subject_template_is_joined(render: RenderFn, ann: Contact) -> None:
    out = render("tips", ann, subject="Three\n   trail\ttips  ", preheader=" a\n b ")
    assert out.subject == "Three trail tips"
    assert out.preheader == "a b"


def test_html_subject_is_not_html_escaped(render: RenderFn, ann: Contact) -> None:
    out = render("tips", ann, subject="Tips & tricks for {{ contact.first_name }} <3")
    assert out.subject == "Tips & tricks for Ann <3"
    assert "<title>Tips &amp; tricks for Ann &lt;3</title>" in out.html


def test_contact_fields_named_like_dict_methods(
    render_source: Callable[..., RenderedEmail],
) -> None:
    source = FRAGMENT.format("[{{ contact.items }}|{{ contact.keys }}|{{ contact.email }}]")
    who = Contact(id=1, email="bo@example.com", fields={"items": "boots", "keys": "3"})
    out = render_source(source, who)
    assert "[boots|3|bo@example.com]" in out.html


def test_optional_field_tests_false_when_absent(
    render_source: Callable[..., RenderedEmail],
) -> None:
    source = FRAGMENT.format(
        "{% if contact.company %}at {{ contact.company }}{% else %}no company{% endif %}"
    )
    absent = render_source(source, Contact(id=1, email="a@example.com"))
    assert "no company" in absent.html
    present = render_source(source, Contact(id=1, email="a@example.com", fields={"company": "X"}))
    assert "at X" in present.html and "no company" not in present.html


def test_campaign_and_step_ids_are_in_context(
    render_source: Callable[..., RenderedEmail],
) -> None:
    out = render_source(FRAGMENT.format("[{{ campaign_id }}/{{ step_id }}]"), step_id="s1")
    assert "[welcome/s1]" in out.html


def test_unknown_template_is_a_template_error(render: RenderFn, ann: Contact) -> None:
    with pytest.raises(TemplateError, match="unknown template") as info:
        render("no-such-template", ann)
    assert info.value.template == "no-such-template"


def test_contact_without_id_is_refused(render: RenderFn) -> None:
    with pytest.raises(ValueError, match="stored contact"):
        render("welcome", Contact(email="new@example.com"))


def test_same_contact_renders_the_same_email(renderer: Renderer, ann: Contact) -> None:
    kwargs = {
        "template": "welcome",
        "subject": step(renderer.workspace, "welcome").subject,
        "preheader": "",
        "contact": ann,
        "message_id": "fixed-id",
        "campaign_id": "welcome",
        "step_id": "welcome",
        "track": True,
    }
    assert renderer.render(**kwargs) == renderer.render(**kwargs)  # type: ignore[arg-type]


def test_unsubscribe_url_differs_per_contact(renderer: Renderer) -> None:
    assert renderer.unsubscribe_url(1) != renderer.unsubscribe_url(2)
    assert renderer.unsubscribe_url(1).startswith(f"{BASE}/u/")


def test_non_ascii_contact_values_become_character_references(render: RenderFn) -> None:
    """The HTML stays ASCII (so it needs no transfer encoding) and shows the same name."""
    zoe = Contact(id=12, email="zoe@example.com", fields={"first_name": "Zoë <Ω>"})
    out = render("welcome", zoe)
    assert "Welcome to Acme Outdoor, Zo&#235; &lt;&#937;&gt;!" in out.html
    assert out.html.isascii()
    assert "Welcome to Acme Outdoor, Zoë <Ω>!" in out.text
    assert out.subject == "Welcome to Acme Outdoor, Zoë <Ω>"
