"""Fixtures for the emails tests: a renderer over the demo workspace, a contact, a copied
workspace whose templates a test may write."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from campaigns.schema import SendEmail
from campaigns.workspace import Workspace, load_workspace
from contacts.models import Contact
from drip.settings import Settings
from emails import RenderedEmail, Renderer
from tests.support import copy_workspace

BASE = "http://testserver"  # the settings fixture's public_base_url

#: A fragment wrapping ``{}`` in the smallest valid MJML body.
FRAGMENT = "<mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section>\n"


def step(workspace: Workspace, template: str) -> SendEmail:
    """The demo campaign's send_email step that uses ``template``."""
    for s in workspace.campaigns["welcome"].steps:
        if s.send_email is not None and s.send_email.template == template:
            return s.send_email
    raise AssertionError(f"no step sends {template}")


def new_message_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def renderer(workspace: Workspace, settings: Settings) -> Renderer:
    return Renderer(workspace, settings)


@pytest.fixture
def ann() -> Contact:
    return Contact(id=7, email="ann@example.com", fields={"first_name": "Ann"})


RenderFn = Callable[..., RenderedEmail]
_DEMO = ("welcome", "tips", "welcome-reminder")


def render_with(renderer: Renderer) -> RenderFn:
    """``render(template, contact, **overrides)`` with the demo step's subject and preheader."""

    def render(template: str, contact: Contact, **overrides: Any) -> RenderedEmail:
        send = step(renderer.workspace, template) if template in _DEMO else None
        kwargs: dict[str, Any] = {
            "template": template,
            "subject": send.subject if send else "Subject",
            "preheader": send.preheader if send else "",
            "contact": contact,
            "message_id": new_message_id(),
            "campaign_id": "welcome",
            "step_id": template,
            "track": True,
        }
        kwargs.update(overrides)
        return renderer.render(**kwargs)

    return render


@pytest.fixture
def render(renderer: Renderer) -> RenderFn:
    return render_with(renderer)


@pytest.fixture
def own_workspace(tmp_path: Path) -> Path:
    """A copy of the demo workspace: tests add templates to its ``emails/`` folder."""
    return copy_workspace(tmp_path / "ws")


@pytest.fixture
def render_source(own_workspace: Path, settings: Settings) -> Callable[..., RenderedEmail]:
    """Write ``source`` as template ``custom`` in a copied workspace and render it."""

    def render(source: str, contact: Contact | None = None, **overrides: Any) -> RenderedEmail:
        (own_workspace / "emails" / "custom.mjml").write_text(source, encoding="utf-8")
        renderer = Renderer(load_workspace(own_workspace), settings)
        who = contact or Contact(id=1, email="ann@example.com", fields={"first_name": "Ann"})
        return render_with(renderer)("custom", who, **overrides)

    return render
