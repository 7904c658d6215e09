"""The tour (docs/getting-started.md) as a reader follows it: a real ``drip dev`` in a fresh
folder with the demo workspace, every marked command run as shown, and the lines it prints
compared with the page's.

Between the commands the test does what the page tells the reader to do in a browser: open the
welcome email (its pixel, fetched with a desktop browser's user agent, since a scripted client
is judged a machine and would not move the journey), click a link of the tips email, and
unsubscribe Bob with his email's one-click link. What may differ from the page is normalised
on both sides: ports, the folder, times and version hashes. A page line ``…`` stands for any
number of lines.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import httpx
import pytest

from tests.docs._blocks import DOCS, Block, console, marked_blocks
from tests.support import EXAMPLES, ROOT, free_port, venv_binary

pytestmark = pytest.mark.e2e

PAGE = DOCS / "getting-started.md"
#: a desktop browser, as the reader's (see the page's note on machines)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
DOCS_BASE = "http://localhost:8000"
WITHIN = 60.0


class Tour:
    """``drip dev`` in ``folder`` (the demo workspace at ``examples/acme``, state in ``.drip``,
    as after ``make dev`` in a checkout) on free ports, and what a reader does beside it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.api, self.ui = free_port(), free_port()
        self.base = f"http://localhost:{self.api}"
        self.mailbox = folder / ".drip" / "mailbox"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
            "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(venv_binary('drip')).parent}:{os.environ['PATH']}",
            "COLUMNS": "200",
            "DRIP_API_PORT": str(self.api),
            "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "DRIP_TEMPORAL_UI_PORT": str(self.ui),
            "DRIP_SMTP_PORT": str(free_port()),
            "DRIP_PUBLIC_BASE_URL": self.base,
            # the test opens the welcome email the moment it lands, faster than the bot rule
            # allows people (the reader takes longer than 2 s)
            "DRIP_TRACKING_MIN_SECONDS_AFTER_SEND": "0",
        }
        self.log = folder / "dev.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [venv_binary("drip"), "dev"], cwd=self.folder, env=self.env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.poll(lambda: "Ctrl-C to stop" in self.output(), "the URL box")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def poll(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WITHIN
        while not done():
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"drip dev exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {WITHIN:.0f} s:\n{self.output()}")
            time.sleep(0.2)

    def run(self, command: str) -> list[str]:
        command = command.replace(DOCS_BASE, self.base).replace(".venv/bin/drip", "drip")
        done = subprocess.run(
            ["bash", "-c", command], cwd=self.folder, env=self.env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout.splitlines()

    def emails_to(self, address: str, count: int) -> list[Message]:
        def found() -> list[Message]:
            messages = [
                email.message_from_bytes(p.read_bytes()) for p in sorted(self.mailbox.glob("*"))
            ]
            return [m for m in messages if m["To"] and address in m["To"]]

        self.poll(lambda: len(found()) >= count, f"{count} email(s) to {address}")
        return found()

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        with httpx.Client(headers={"user-agent": BROWSER}, timeout=10) as client:
            return client.request(url=url, **kwargs)  # type: ignore[arg-type]


def _html(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no HTML part")


def _normalise(line: str, tour: Tour | None = None) -> str:
    if tour is not None:
        line = line.replace(tour.base, DOCS_BASE).replace(f":{tour.ui}", ":8233")
        line = line.replace(str(tour.folder.resolve()), "/home/you/drip")
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", line)
    line = re.sub(r"\(v[0-9a-f]{16}\)", "(v<version>)", line)
    # the URL box: its frame and padding depend on the longest line
    line = line.translate({ord(c): " " for c in "╭╮╰╯│─"})
    return " ".join(line.split())


def _matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` (with ``…`` lines standing for any lines) is the whole of ``actual``."""
    if not expected:
        return not actual
    if expected[0] == "…":
        return any(_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and _matches(expected[1:], actual[1:])


def _check(tour: Tour, block: Block, actual: list[str] | None = None) -> None:
    shown = console(block)
    expected = [_normalise(line) for line in shown.expected]
    deadline = time.monotonic() + WITHIN
    while True:  # a journey moves on a moment after its email lands: poll with the command
        got = actual if actual is not None else tour.run(shown.command)
        normalised = [_normalise(line, tour) for line in got]
        if _matches(expected, normalised):
            return
        if actual is not None or time.monotonic() > deadline:
            pytest.fail(
                f"{block.where}: the page shows\n"
                + "\n".join(expected)
                + "\nbut it printed\n"
                + "\n".join(normalised)
            )
        time.sleep(0.5)


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    shutil.copytree(EXAMPLES, tmp_path / "examples" / "acme")
    tour = Tour(tmp_path)
    try:
        yield tour
    finally:
        tour.stop()


def test_the_tour_prints_what_the_page_shows(tour: Tour) -> None:
    blocks = {b.name: b for b in marked_blocks("checked", [PAGE])}
    assert list(blocks) == [
        "dev", "subscribe", "journey-sent", "journey-opened", "journey-clicked",
        "subscribe-bob", "journey-unsubscribed", "lead",
    ], "a new checked block needs its step in this test"  # fmt: skip

    assert console(blocks["dev"]).command == "make dev"
    tour.start()  # `make dev` is `drip dev` once .venv exists
    box = tour.output().split("Ctrl-C to stop", 1)[0] + "Ctrl-C to stop"
    _check(tour, blocks["dev"], box.splitlines())

    _check(tour, blocks["subscribe"])
    (welcome,) = tour.emails_to("ann@example.com", 1)
    _check(tour, blocks["journey-sent"])

    # 3. the reader opens the welcome email in the mailbox: the browser loads its pixel
    (pixel,) = re.findall(rf"{re.escape(tour.base)}/t/o/[\w-]+\.gif", _html(welcome))
    assert tour.get(pixel, method="GET").status_code == 200
    _welcome, tips = tour.emails_to("ann@example.com", 2)
    _check(tour, blocks["journey-opened"])

    # 5. and clicks the tips email's first link
    link = re.findall(rf"{re.escape(tour.base)}/t/c/[\w-]+", _html(tips))[0]
    assert tour.get(link, method="GET", follow_redirects=False).status_code == 302
    _check(tour, blocks["journey-clicked"])

    # 6. Bob subscribes and unsubscribes with his welcome email's one-click link
    _check(tour, blocks["subscribe-bob"])
    (bob,) = tour.emails_to("bob@example.com", 1)
    unsubscribe = re.findall(r"<(http[^>]+/u/[^>]+)>", bob["List-Unsubscribe"])[0]
    answer = tour.get(unsubscribe, method="POST", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    _check(tour, blocks["journey-unsubscribed"])

    _check(tour, blocks["lead"])
