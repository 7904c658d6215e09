"""The dev mailbox stores what arrives over real SMTP, lists it newest first, and stays inside
its folder whatever name it is asked for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from drip.mailbox import (
    InvalidMessageName,
    MessageNotFound,
    list_messages,
    read_message,
    read_raw,
    start_mailbox,
    stop_mailbox,
    store_message,
)
from tests.support import free_port


def _email(subject: str, to: str = "ada@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Acme Outdoor <hello@acme.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@acme.example>"
    msg["Date"] = "Thu, 05 Nov 2026 10:00:00 +0000"
    msg.set_content("Hello in plain text")
    msg.add_alternative("<p>Hello in <b>HTML</b></p>", subtype="html")
    return msg


@pytest.fixture
async def mailbox(tmp_path: Path) -> AsyncIterator[tuple[Path, int]]:
    folder, port = tmp_path / "mailbox", free_port()
    server = await start_mailbox(folder, port)
    yield folder, port
    await stop_mailbox(server)


async def test_messages_sent_over_smtp_are_stored_and_listed_newest_first(
    mailbox: tuple[Path, int],
) -> None:
    folder, port = mailbox
    await aiosmtplib.send(_email("First"), hostname="127.0.0.1", port=port)
    await aiosmtplib.send(
        _email("Zweite Nachricht: grüße ✉"),
        hostname="127.0.0.1",
        port=port,
        recipients=["ada@example.com", "hidden@example.com"],  # one Bcc recipient
    )

    entries = list_messages(folder)

    assert [e.subject for e in entries] == ["Zweite Nachricht: grüße ✉", "First"]
    newest = entries[0]
    assert newest.to == "ada@example.com"
    assert newest.from_ == "Acme Outdoor <hello@acme.example>"
    assert newest.message_id.endswith("@acme.example>")
    assert newest.date == "Thu, 05 Nov 2026 10:00:00 +0000"
    assert newest.name.endswith(".eml") and (folder / newest.name).is_file()
    assert entries[1].received_at <= newest.received_at

    msg = read_message(folder, newest.name)
    html = msg.get_body(("html",))
    assert html is not None and "<b>HTML</b>" in html.get_content()
    assert msg["X-Original-To"] == "ada@example.com, hidden@example.com"
    assert msg["Return-Path"] == "<hello@acme.example>"
    assert not [p for p in folder.iterdir() if not p.name.endswith(".eml")], "temp files left"


async def test_stopping_one_server_leaves_the_senders_of_another_alone(
    mailbox: tuple[Path, int],
) -> None:
    folder, port = mailbox
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    await client.send_message(_email("Pooled"))
    server = await start_mailbox(folder, free_port())
    await stop_mailbox(server)  # a second server stops without touching the first one's clients
    await client.send_message(_email("Still connected"))
    await client.quit()
    assert len(list_messages(folder)) == 2


async def test_a_sender_connected_at_shutdown_is_disconnected(tmp_path: Path) -> None:
    port = free_port()
    server = await start_mailbox(tmp_path, port)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await client.connect()
    await stop_mailbox(server)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        for _ in range(50):  # the hang-up reaches the client within a few loop turns
            await client.noop()
            await asyncio.sleep(0.01)
    client.close()


@pytest.mark.parametrize(
    "name",
    [
        "../drip.db",
        "../../etc/passwd",
        "/etc/passwd",
        "..eml",
        ".hidden.eml",
        "a/../../x.eml",
        "sub/x.eml",
        "x.eml\x00",
        "secret_key",
        "",
    ],
)
def test_names_that_could_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "mailbox"
    folder.mkdir()
    (tmp_path / "drip.db").write_bytes(b"secret")
    with pytest.raises(InvalidMessageName):
        read_message(folder, name)
    with pytest.raises(InvalidMessageName):
        read_raw(folder, name)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mailbox"
    folder.mkdir()
    (tmp_path / "outside.eml").write_bytes(b"Subject: secret\r\n\r\n")
    (folder / "link.eml").symlink_to(tmp_path / "outside.eml")
    with pytest.raises(InvalidMessageName):
        read_raw(folder, "link.eml")


def test_an_unknown_name_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(MessageNotFound):
        read_raw(tmp_path, "20261105T100000.000000Z-deadbeef.eml")


def test_listing_ignores_files_that_are_not_messages(tmp_path: Path) -> None:
    name = store_message(tmp_path, _email("Kept").as_bytes())
    (tmp_path / ".incoming-half.tmp").write_bytes(b"Subject: half\r\n")
    (tmp_path / "notes.txt").write_text("not mail")
    assert [e.name for e in list_messages(tmp_path)] == [name]
    assert list_messages(tmp_path / "missing") == []
