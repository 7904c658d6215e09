"""End-to-end fixtures: the real Temporal dev server, the API in-process, a worker subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from contacts.db import create_db_engine, migrate
from drip.settings import Settings
from tests.postgres import postgres_url
from tests.support import venv_binary

pytestmark = pytest.mark.e2e


def temporal_target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


class WorkerProcess:
    """`drip worker` as its own process, so a test can kill it the hard way and start another."""

    def __init__(self, settings: Settings, temporal_address: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "DRIP_HOME": str(settings.home),
            "DRIP_WORKSPACE": str(settings.workspace),
            "DRIP_DATABASE_URL": settings.database_url,
            "DRIP_TEMPORAL_ADDRESS": temporal_address,
            "DRIP_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
            "DRIP_SMTP_HOST": settings.smtp_host,
            "DRIP_SMTP_PORT": str(settings.smtp_port),
            "DRIP_PUBLIC_BASE_URL": settings.public_base_url,
            "DRIP_SECRET_KEY": settings.secret().decode(),
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [venv_binary("drip"), "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, exactly like a crashed machine."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def worker_process(
    settings: Settings, dev_env: WorkflowEnvironment, tmp_path: Path
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    yield worker
    worker.stop()


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated database on the suite's PostgreSQL server, for tests of several processes."""
    db = create_db_engine(postgres_url(request))
    migrate(db)
    yield db
    db.dispose()
