"""The API in-process, without Temporal: events are stored and left for the sweep to route."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.support import api_client


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, workspace, engine) as client:
        yield client
