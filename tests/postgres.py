"""A throwaway PostgreSQL server from Debian's binaries, for the database suite.

PostgreSQL refuses to run as root, and CI runs as root, so the server runs as the ``postgres``
system user (created by the Debian package) when we are root. Without the binaries the tests that
need it are skipped with a reason that says how to get them (in CI, where
``DRIP_REQUIRE_SYSTEM_TOOLS=1``, they fail instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from tests.support import free_port, missing_system_tool

USER = "drip"


def _pg_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if candidates:
        return candidates[0].parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def _run(args: list[str], as_postgres: bool) -> None:
    cmd = ["runuser", "-u", "postgres", "--", *args] if as_postgres else args
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, int]]:
    """(host, port) of a PostgreSQL server started for this test session."""
    bindir = _pg_bin()
    if bindir is None:
        missing = (
            "PostgreSQL is not installed (Debian package 'postgresql'; `bash .ci/run` installs it)"
        )
        missing_system_tool(missing)
    as_postgres = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="drip-pg-"))
    data = base / "data"
    if as_postgres:
        shutil.chown(base, user="postgres", group="postgres")
    port = free_port()
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ],
        as_postgres,
    )
    _run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(base / "log"),
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        as_postgres,
    )
    try:
        yield "127.0.0.1", port
    finally:
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], as_postgres)
        shutil.rmtree(base, ignore_errors=True)


def postgres_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server for one test, dropped afterwards."""
    host, port = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(user=USER, host=host, port=port, dbname=name)
    janitor.init()
    request.addfinalizer(janitor.drop)
    return f"postgresql+psycopg://{USER}@{host}:{port}/{name}"
