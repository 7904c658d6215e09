"""TemplateEngine: finds templates by name and picks up edits without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from campaigns.workspace import load_workspace
from contacts.models import Contact
from drip.settings import Settings
from emails import Renderer, TemplateEngine, TemplateError
from emails.templates import Record
from tests.emails.conftest import FRAGMENT


def _write(path: Path, text: str, *, bump_ns: int = 0) -> None:
    """Write ``text``; ``bump_ns`` moves the modification time on by that much, so a rewrite
    within the file system's timestamp granularity still counts as a change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if bump_ns:
        stamp = max(path.stat().st_mtime_ns, before + bump_ns)
        os.utime(path, ns=(stamp, stamp))


def _ctx(first_name: str = "Ann") -> dict[str, object]:
    return {
        "contact": Record({"first_name": first_name}),
        "workspace": Record({"name": "W", "postal_address": "1 Street"}),
        "unsubscribe_url": "https://example.test/u/x",
        "view_in_browser_url": "",
        "subject": "S",
        "preheader": "P",
    }


def test_edit_with_new_size_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "t.mjml"
    _write(path, FRAGMENT.format("version one"))
    engine = TemplateEngine({"t": path})
    assert "version one" in engine.render_body("t", _ctx())
    _write(path, FRAGMENT.format("version two, longer"))
    html = engine.render_body("t", _ctx())
    assert "version two, longer" in html and "version one" not in html


def test_edit_with_same_size_and_new_mtime_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "t.mjml"
    _write(path, FRAGMENT.format("AAAA"))
    engine = TemplateEngine({"t": path})
    assert "AAAA" in engine.render_body("t", _ctx())
    _write(path, FRAGMENT.format("BBBB"), bump_ns=1_000_000_000)
    assert "BBBB" in engine.render_body("t", _ctx())


def test_unchanged_file_is_not_compiled_again(tmp_path: Path) -> None:
    path = tmp_path / "t.mjml"
    _write(path, FRAGMENT.format("same"))
    engine = TemplateEngine({"t": path})
    assert engine.body("t") is engine.body("t")


def test_broken_edit_then_fix(tmp_path: Path) -> None:
    path = tmp_path / "t.mjml"
    _write(path, FRAGMENT.format("good"))
    engine = TemplateEngine({"t": path})
    assert "good" in engine.render_body("t", _ctx())
    _write(path, FRAGMENT.format("{{ broken "), bump_ns=1_000_000_000)
    with pytest.raises(TemplateError, match="syntax error"):
        engine.render_body("t", _ctx())
    with pytest.raises(TemplateError, match="syntax error"):  # not served from a stale cache
        engine.render_body("t", _ctx())
    _write(path, FRAGMENT.format("good again"), bump_ns=1_000_000_000)
    assert "good again" in engine.render_body("t", _ctx())


def test_missing_and_unreadable_templates(tmp_path: Path) -> None:
    path = tmp_path / "t.mjml"
    engine = TemplateEngine({"t": path, "bin": tmp_path / "bin.mjml"})
    with pytest.raises(TemplateError, match="cannot read template") as info:
        engine.body("t")
    assert info.value.template == "t"
    (tmp_path / "bin.mjml").write_bytes(b"\xff\xfe not utf-8 \x80")
    with pytest.raises(TemplateError, match="cannot read template"):
        engine.body("bin")
    with pytest.raises(TemplateError, match="unknown template"):
        engine.body("other")


def test_deleted_template_is_an_error_not_a_stale_render(tmp_path: Path) -> None:
    path = tmp_path / "t.mjml"
    _write(path, FRAGMENT.format("here"))
    engine = TemplateEngine({"t": path})
    engine.body("t")
    path.unlink()
    with pytest.raises(TemplateError, match="cannot read template"):
        engine.body("t")


def test_renderer_picks_up_edits_in_the_workspace(own_workspace: Path, settings: Settings) -> None:
    renderer = Renderer(load_workspace(own_workspace), settings)
    ann = Contact(id=1, email="ann@example.com", fields={"first_name": "Ann"})

    def welcome() -> str:
        return renderer.render(
            template="welcome",
            subject="s",
            preheader="",
            contact=ann,
            message_id="m",
            campaign_id="welcome",
            step_id="welcome",
            track=False,
        ).html

    assert "Welcome to Acme Outdoor, Ann!" in welcome()
    path = own_workspace / "emails" / "welcome.mjml"
    _write(
        path,
        path.read_text().replace("Welcome to Acme Outdoor,", "Hello again,"),
        bump_ns=1_000_000_000,
    )
    html = welcome()
    assert "Hello again, Ann!" in html and "Welcome to Acme Outdoor, Ann!" not in html
