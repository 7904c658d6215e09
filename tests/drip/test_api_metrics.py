"""``/metrics`` under a real ``drip api``: with ``--workers 2`` every scrape, whichever worker
answers it, shows the whole server's totals (the processes add up their counts in a directory
``drip api`` makes fresh and removes), the database gauges appear once, not once a process; one
process (granian or uvicorn) counts in memory as before."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import EXAMPLES, free_port, venv_binary

STARTUP_SECONDS = 30.0
SETTLE_SECONDS = 10.0
EACH = 12  # requests of every kind
SCRAPES = 8
GOOD = {"email": "ann@example.com", "consent": "yes"}

Key = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[Key, float]


@dataclass
class Api:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    tmp: Path  # the TMPDIR of drip api, where it makes its metrics directory

    def metrics_dirs(self) -> list[Path]:
        return sorted(self.tmp.glob("drip-api-metrics-*"))


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(tmp_path: Path, procs: list[subprocess.Popen[bytes]], *args: str, **env: str) -> Api:
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [venv_binary("drip"), "api", *args],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
                "DRIP_HOME": str(tmp_path / ".drip"),
                "DRIP_WORKSPACE": str(EXAMPLES),
                "DRIP_API_PORT": str(port),
                "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # none: events stay unrouted
                "TMPDIR": str(tmp),
                **env,
            },
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so cleanup reaches the workers
        )
    procs.append(proc)
    api = Api(proc, f"http://127.0.0.1:{port}", log, tmp)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"drip api exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{api.url}/healthz", timeout=1).status_code == 200:
                return api
        assert time.monotonic() < deadline, f"drip api did not answer:\n{log.read_text()}"
        time.sleep(0.05)


def _samples(text: str) -> tuple[Samples, list[str]]:
    """The samples by (name, labels), and every sample name in order (to spot duplicates)."""
    samples: Samples = {}
    names: list[str] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
            names.append(s.name)
    return samples, names


def _requests(method: str, route: str, status: str, name: str = "drip_http_requests_total") -> Key:
    return (name, frozenset({"method": method, "route": route, "status": status}.items()))


def _kind(name: str, kind: str) -> Key:
    return (name, frozenset({"kind": kind}.items()))


FORM_PAGE_SECONDS = _requests(
    "GET", "/forms/{form_id}", "200", "drip_http_request_duration_seconds_count"
)


@pytest.mark.parametrize(
    ("args", "processes", "leftover"),
    [
        pytest.param(("--workers", "2"), 2, False, id="granian-2-workers"),
        # a PROMETHEUS_MULTIPROC_DIR left in the shell: drip api uses a fresh directory or none
        pytest.param(("--workers", "2"), 2, True, id="granian-2-workers-leftover-env"),
        pytest.param((), 1, True, id="granian-1-worker-leftover-env"),
        pytest.param(("--server", "uvicorn"), 1, False, id="uvicorn"),
    ],
)
def test_every_scrape_shows_the_totals_of_all_worker_processes(
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
    args: tuple[str, ...],
    processes: int,
    leftover: bool,
) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "stale")} if leftover else {}
    api = _start(tmp_path, started, *args, **env)
    if processes > 1:
        deadline = time.monotonic() + STARTUP_SECONDS
        while f"Started worker-{processes}" not in api.log.read_text():
            assert time.monotonic() < deadline, "the last worker did not start"
            time.sleep(0.05)
        assert len(api.metrics_dirs()) == 1  # made for this run, under TMPDIR
    else:
        assert api.metrics_dirs() == []  # one process counts in memory

    # each request on a new connection: the kernel hands them to either worker
    for _ in range(EACH):
        assert httpx.get(f"{api.url}/forms/newsletter", timeout=10).status_code == 200
        assert httpx.get(f"{api.url}/forms/no-such-form", timeout=10).status_code == 404
        assert httpx.get(f"{api.url}/no/such/path", timeout=10).status_code == 404
        assert httpx.get(f"{api.url}/t/o/{'a' * 22}.gif", timeout=10).status_code == 200
    posted = httpx.post(f"{api.url}/forms/newsletter", json=GOOD, timeout=10)
    assert posted.status_code == 202  # one form event, unrouted: Temporal is not there

    expected: dict[Key, float | None] = {
        _requests("GET", "/forms/{form_id}", "200"): EACH,
        _requests("GET", "/forms/{form_id}", "404"): EACH,
        _requests("GET", "unmatched", "404"): EACH,
        _requests("POST", "/forms/{form_id}", "202"): 1,
        _kind("drip_tracking_hits_total", "open"): EACH,
        # counted by each process's hit writer thread when it flushes
        _kind("drip_tracking_unknown_tokens_total", "open"): EACH,
        ("drip_api_processes", frozenset()): processes,
        # read from the database on scrape by the answering process: once, never summed
        ("drip_events_unrouted", frozenset()): 1,
        ("drip_messages_interrupted", frozenset()): 0,
    }

    def scrape() -> tuple[dict[Key, float | None], list[str], Samples]:
        r = httpx.get(f"{api.url}/metrics", timeout=10)
        assert r.status_code == 200
        samples, names = _samples(r.text)
        return {key: samples.get(key) for key in expected}, names, samples

    # the last requests are counted just after their answers: wait for the totals once
    deadline = time.monotonic() + SETTLE_SECONDS
    seen, _, _ = scrape()
    while seen != expected:
        assert time.monotonic() < deadline, f"the totals never matched: {seen}"
        time.sleep(0.05)
        seen, _, _ = scrape()

    for _ in range(SCRAPES):  # then every scrape, whichever worker answers, shows them
        seen, names, samples = scrape()
        assert seen == expected
        assert samples[FORM_PAGE_SECONDS] == EACH
        for once in ("drip_info", "drip_events_unrouted", "drip_messages_interrupted"):
            assert names.count(once) == 1, once  # no copy per process, no pid label

    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(timeout=45) == 0, api.log.read_text()
    assert api.metrics_dirs() == []  # removed when the server stopped
