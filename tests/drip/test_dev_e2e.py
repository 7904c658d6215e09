"""``drip dev`` as a user runs it: a process in a fresh folder that serves the form, delivers the
welcome email to its mailbox, stops cleanly on Ctrl-C, and picks up its state on restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from drip.mailbox import list_messages
from tests.support import ROOT, copy_workspace, free_port, venv_binary

pytestmark = pytest.mark.e2e

READY_WITHIN = 90.0
STOP_WITHIN = 30.0


class DevProcess:
    """One ``drip dev`` run; its output goes to a log file the assertions quote on failure."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cwd, self.env, self.log = cwd, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [venv_binary("drip"), "dev"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches a terminal's foreground job even when pytest runs in the
                # background, where SIGINT is inherited as ignored.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, url: str) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"drip dev exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        pytest.fail(f"{url} did not answer 200 within {READY_WITHIN:.0f} s:\n{self.output()}")

    def wait_for_output(self, text: str, within: float = 10.0) -> None:
        """The URLs are printed just after the API starts serving, so poll rather than race."""
        deadline = time.monotonic() + within
        while text not in self.output():
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never appeared in the output:\n{self.output()}")
            time.sleep(0.1)

    def interrupt(self) -> int:
        """Ctrl-C, then the exit code (the test fails if it takes longer than STOP_WITHIN)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"drip dev did not stop within {STOP_WITHIN:.0f} s:\n{self.output()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_drip_dev_serves_delivers_stops_cleanly_and_restarts(tmp_path: Path) -> None:
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    home = tmp_path / ".drip"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        # the checkout first, whatever state the editable install is in
        "PYTHONPATH": str(ROOT),
        "DRIP_HOME": str(home),
        "DRIP_WORKSPACE": str(copy_workspace(tmp_path)),
        "DRIP_API_PORT": str(api_port),
        "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "DRIP_TEMPORAL_UI_PORT": str(free_port()),
        "DRIP_SMTP_PORT": str(free_port()),
        "DRIP_PUBLIC_BASE_URL": base,
    }
    dev = DevProcess(tmp_path, env, tmp_path / "dev.log")
    try:
        dev.start()
        dev.wait_until_serving(f"{base}/forms/newsletter")
        dev.wait_for_output(f"{base}/dev/mailbox")

        r = httpx.post(
            f"{base}/forms/newsletter",
            json={"email": "ada@example.com", "first_name": "Ada", "consent": True},
            timeout=10,
        )
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while not list_messages(home / "mailbox") and time.monotonic() < deadline:
            time.sleep(0.25)
        sent = list_messages(home / "mailbox")
        assert [m.to for m in sent] == ["ada@example.com"], dev.output()

        assert dev.interrupt() == 0, dev.output()
        for state in ("drip.db", "temporal.db", "temporal.log", f"mailbox/{sent[0].name}"):
            assert (home / state).is_file(), state

        dev.start()  # the restart: same ports, same state
        dev.wait_until_serving(f"{base}/forms/newsletter")
        page = httpx.get(f"{base}/dev/mailbox", timeout=10)
        assert page.status_code == 200 and sent[0].name in page.text
        assert dev.interrupt() == 0, dev.output()
    finally:
        dev.kill()
