"""``drip dkim generate``: the key it writes (mode 0600, never over an existing one unless
``--force``) is one the worker's ``DkimSigner`` accepts from the ``DRIP_DKIM_*`` lines it
prints, and dkimpy verifies a signed message against the TXT record it prints, read back from
the zone-file strings as DNS would join them. The docs show what it prints."""

from __future__ import annotations

import contextlib
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest
from typer.testing import CliRunner

from drip.cli import app
from drip.settings import Settings
from emails import RenderedEmail, build_message
from emails.dkim import DkimSigner
from emails.list_headers import campaign_mailing
from tests.docs._blocks import DOCS, console, marked_blocks
from tests.support import venv_binary


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _generate(cwd: Path, *args: str) -> Run:
    """The command in this process (as the other CLI tests run theirs), in ``cwd``."""
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(app, ["dkim", "generate", *args])
    return Run(result.exit_code, result.stdout, result.stderr)


def _run_drip(cwd: Path, *args: str) -> Run:
    """The installed ``drip`` as an operator runs it."""
    done = subprocess.run(
        [venv_binary("drip"), "dkim", "generate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(cwd)},
    )
    return Run(done.returncode, done.stdout, done.stderr)


def _settings_printed(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(DRIP_DKIM_[A-Z_]+)=(.+)$", out, re.M))


def _zone_record(out: str, name: str) -> str:
    """The TXT value as a resolver returns it: the zone file's strings, joined."""
    start = out.index(f"{name}. IN TXT (")
    end = out.index(")", start + len(name) + 12)
    return "".join(re.findall(r'"([^"]*)"', out[start:end]))


def _message() -> bytes:
    mailing = campaign_mailing("Acme Outdoor", "acme.example", "welcome")
    rendered = RenderedEmail(
        subject="Welcome",
        html="<p>Hello</p>",
        text="Hello",
        unsubscribe_url="https://mail.acme.example/u/t",
    )
    return build_message(
        rendered,
        from_addr="Acme Outdoor <hello@acme.example>",
        to_addr="ann@example.com",
        reply_to=None,
        message_id="m-1",
        domain="acme.example",
        unsubscribe_mailto=None,
        list_id=mailing.list_id,
        feedback_id=mailing.feedback_id("welcome"),
    )


@pytest.mark.parametrize("kind", [[], ["--bits", "4096"], ["--ed25519"]], ids=str)
def test_the_key_signs_what_the_printed_record_verifies(tmp_path: Path, kind: list[str]) -> None:
    run = _generate(tmp_path, "--domain", "acme.example", "--selector", "drip2026", *kind)
    assert run.returncode == 0, run.stderr
    printed = _settings_printed(run.stdout)
    key = tmp_path / "dkim-acme.example-drip2026.pem"
    assert printed == {
        "DRIP_DKIM_DOMAIN": "acme.example",
        "DRIP_DKIM_SELECTOR": "drip2026",
        "DRIP_DKIM_PRIVATE_KEY": str(key),
    }
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    settings = Settings(
        dkim_domain=printed["DRIP_DKIM_DOMAIN"],
        dkim_selector=printed["DRIP_DKIM_SELECTOR"],
        dkim_private_key=Path(printed["DRIP_DKIM_PRIVATE_KEY"]),
    )
    signer = DkimSigner.from_settings(settings)  # what drip worker builds at start
    assert signer is not None
    assert signer.algorithm == ("ed25519-sha256" if kind == ["--ed25519"] else "rsa-sha256")
    if kind == ["--bits", "4096"]:
        assert signer.key_bits == 4096
    name = "drip2026._domainkey.acme.example"
    record = _zone_record(run.stdout, name)
    zone = run.stdout[run.stdout.index(f"{name}. IN TXT (") :]
    strings = re.findall(r'"([^"]*)"', zone[: zone.index(")")])
    # as DNS needs: no string over 255 characters (RFC 1035), all but the last full
    assert [len(s) for s in strings[:-1]] == [255] * (len(strings) - 1)
    assert 0 < len(strings[-1]) <= 255
    assert len(strings) == {"--bits": 3, "--ed25519": 1}.get(kind[0] if kind else "", 2)
    assert record == signer.dns_record() and f"   value: {record}" in run.stdout

    def dns(query: bytes, timeout: float = 5) -> bytes | None:
        return record.encode() if query == f"{name}.".encode() else None

    signed = signer.sign(_message())
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Hello", b"Hullo"), dnsfunc=dns)
    # the advice: SPF with the relay's include, DMARC starting at p=none with reports
    assert 'acme.example. IN TXT "v=spf1 include:RELAY-SPF-DOMAIN ~all"' in run.stdout
    assert (
        '_dmarc.acme.example. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.example"'
        in run.stdout
    )


def test_an_existing_key_is_never_replaced_without_force(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "acme.pem"
    key.parent.mkdir()
    key.write_text("the key DNS publishes now")
    args = ["--domain", "acme.example", "--selector", "s1", "--out", str(key)]
    refused = _generate(tmp_path, *args)
    assert refused.returncode == 1
    assert f"{key} exists" in refused.stderr and "--force" in refused.stderr
    assert key.read_text() == "the key DNS publishes now"
    assert "DRIP_DKIM" not in refused.stdout
    assert list(key.parent.iterdir()) == [key]  # no half-written file left beside it

    replaced = _generate(tmp_path, *args, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert list(key.parent.iterdir()) == [key]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--domain", "acme example", "--selector", "s"], "not a valid DNS name"),
        (["--domain", "acme.example", "--selector", "s;x"], "not a valid DNS name"),
        (["--domain", "acme.example", "--selector", "s", "--bits", "1024"], "--bits"),
        (["--domain", "a.example", "--selector", "s", "--spf-include", "x y"], "--spf-include"),
        (["--domain", "a.example", "--selector", "s", "--dmarc-rua", "a;p=reject"], "--dmarc-rua"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], said: str
) -> None:
    run = _generate(tmp_path, *args)
    assert run.returncode != 0 and said in run.stderr
    assert "Traceback" not in run.stderr
    assert not list(tmp_path.glob("*.pem"))


def test_the_docs_show_what_it_prints(tmp_path: Path) -> None:
    """The deliverability page's example, run; only the key (random) and the path differ."""
    [block] = marked_blocks("checked", [DOCS / "concepts" / "deliverability.md"])
    shown = console(block)
    assert shown.command.startswith("drip dkim generate ")
    run = _run_drip(tmp_path, *shown.command.split()[3:])
    assert run.returncode == 0, run.stderr

    def normal(lines: list[str]) -> list[str]:
        text = "\n".join(lines)
        text = re.sub(r"p=[A-Za-z0-9+/=]+", "p=KEY", text)
        text = re.sub(r'"[A-Za-z0-9+/=]+"', '"KEY"', text)
        text = re.sub(r"/\S*/(dkim-[\w.-]+\.pem)", r"/PATH/\1", text)
        return text.splitlines()

    assert normal(run.stdout.rstrip("\n").splitlines()) == normal(shown.expected)
