"""``drip broadcasts`` before anything is sent, without Temporal: validate, list, preview, the
dry run's counts, and the refusals (unknown names exit 2; nothing to pause or an unreachable
Temporal exit 1). Sending, status and pause/resume/cancel through a real worker are in
test_cli_broadcasts_send.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from contacts.db import create_db_engine, migrate
from drip import cli, cli_broadcasts
from drip.settings import get_settings
from tests.drip._broadcasts import AB, HELLO, add_audience, broadcast_workspace
from tests.support import free_port


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A workspace with the broadcasts hello and ab, and hello's audience in the database."""
    workspace = broadcast_workspace(tmp_path, hello=HELLO, ab=AB)
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    monkeypatch.setenv("DRIP_HOME", str(tmp_path / ".drip"))
    monkeypatch.setenv("DRIP_WORKSPACE", str(workspace.root))
    monkeypatch.setenv("DRIP_DATABASE_URL", url)
    # nothing listens there: a command that needs Temporal finds it down
    monkeypatch.setenv("DRIP_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(cli_broadcasts.console, "width", 200)
    monkeypatch.setattr(cli_broadcasts.err, "width", 200)
    engine = create_db_engine(url)
    migrate(engine)
    add_audience(engine, 12)
    engine.dispose()
    get_settings.cache_clear()
    yield workspace.root
    get_settings.cache_clear()


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli.app, ["broadcasts", *args])


def test_validate_lists_each_broadcast_and_fails_on_a_broken_one(root: Path) -> None:
    ok = _run("validate")
    assert ok.exit_code == 0, ok.output
    assert f"ok {root}/broadcasts/hello.yaml (broadcast, version " in ok.output
    assert f"ok {root}/broadcasts/ab.yaml (broadcast, A/B test of 2 variants, version " in ok.output

    # a template that fails every send fails its broadcasts (rendered for a sample contact)
    (root / "emails" / "welcome.mjml").write_text("<mjml><mj-body>{{ oops( }}</mj-body></mjml>")
    broken = _run("validate")
    assert broken.exit_code == 1
    assert f"{root}/emails/welcome.mjml:1: error syntax: " in broken.output, broken.output


def test_validate_reports_the_file_and_line_of_a_bad_broadcast(root: Path) -> None:
    (root / "broadcasts" / "bad.yaml").write_text(
        "id: bad\nname: Bad\nemail:\n  template: no-such-template\n  subject: Hi\n"
    )
    result = _run("validate")
    assert result.exit_code == 1
    assert "broadcasts/bad.yaml:4" in result.output, result.output
    assert "no-such-template" in result.output


def test_list_shows_every_broadcast_never_sent(root: Path) -> None:
    result = _run("list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "never sent" in line}
    assert set(lines) == {"ab", "hello"}
    assert "Hello everyone" in lines["hello"]


def test_preview_renders_for_a_contact_and_a_variant(root: Path) -> None:
    mine = _run("preview", "hello", "--contact", "reader03@example.com")
    assert mine.exit_code == 0, mine.output
    head = mine.output.splitlines()[:4]
    assert head == [
        "subject: Hello Reader03",
        "from: Acme Outdoor <hello@acme.example>",
        "reply-to: Acme Support <support@acme.example>",
        "to: reader03@example.com",
    ]
    assert "Acme Outdoor Ltd, 1 Harbour Street" in mine.output  # the text part

    sample = _run("preview", "ab", "--variant", "named")
    assert sample.exit_code == 0, sample.output
    assert sample.output.startswith("subject: Alex, a subject of your own\n")
    assert "variant: named" in sample.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("preview", "nope"), "no broadcast nope in"),
        (
            ("preview", "ab", "--variant", "other"),
            "ab has no variant other (variants: plain, named)",
        ),
        (("preview", "hello", "--contact", "nobody@example.com"), "no contact nobody@example.com"),
        (("send", "nope", "--dry-run"), "no broadcast nope in"),
        (("status", "nope"), "no broadcast nope: not in the workspace and never sent"),
        (("pause", "nope"), "no broadcast nope: not in the workspace and never sent"),
    ],
)
@pytest.mark.usefixtures("root")
def test_unknown_names_exit_2(args: tuple[str, ...], says: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert says in result.output


@pytest.mark.usefixtures("root")
def test_dry_run_counts_the_audience_and_the_suppressed_and_sends_nothing() -> None:
    result = _run("send", "hello", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Hello everyone (hello): audience 13 contacts",
        "  would send: 12",
        "  suppressed: 1",
        "    contact is unsubscribed: 1",
        "  sample: reader00@example.com, reader01@example.com, reader02@example.com, "
        "reader03@example.com, reader04@example.com",
        "nothing sent (dry run)",
    ]


@pytest.mark.usefixtures("root")
def test_status_of_a_broadcast_never_sent_and_nothing_to_pause() -> None:
    status = _run("status", "hello")
    assert status.exit_code == 0, status.output
    assert status.output == "hello: never sent; `drip broadcasts send hello`\n"
    for action in ("pause", "resume"):
        refused = _run(action, "hello")
        assert refused.exit_code == 1
        assert f"hello was never sent: nothing to {action}" in refused.output
    cancel = _run("cancel", "hello", "--yes")
    assert cancel.exit_code == 1
    assert "nothing to cancel" in cancel.output


@pytest.mark.usefixtures("root")
def test_send_with_temporal_down_says_so_and_records_no_send() -> None:
    result = _run("send", "hello", "--yes")
    assert result.exit_code == 1
    assert "nothing done: Temporal cannot be reached" in result.output, result.output
    status = _run("status", "hello")
    assert "never sent" in status.output  # the refused start left no send behind
