"""A throwaway PostgreSQL server for a benchmark run, from Debian's binaries.

The same recipe as the test suite's (``tests/postgres.py``: ``initdb`` into a temp dir, trust
auth on loopback, run as the ``postgres`` system user when we are root, since PostgreSQL
refuses root), but durable as a production server is: fsync and synchronous commit stay on,
so the figures include what a commit really costs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._stack import free_port

__all__ = ["throwaway_postgres"]

USER = "drip"
DATABASE = "drip"


def _bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if candidates:
        return candidates[0].parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise SystemExit("PostgreSQL is not installed (Debian package `postgresql`)")
    return Path(found).resolve().parent


@contextmanager
def throwaway_postgres() -> Iterator[tuple[str, Path]]:
    """A SQLAlchemy URL to an empty database on a new server, and the server's data directory
    (its ``postmaster.pid`` names the server process); stopped and deleted after."""
    bindir = _bindir()
    as_postgres = os.geteuid() == 0

    def run(*args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if as_postgres else list(args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    base = Path(tempfile.mkdtemp(prefix="drip-bench-pg-"))
    if as_postgres:
        shutil.chown(base, user="postgres", group="postgres")
    data, port = base / "data", free_port()
    try:
        run(
            str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c shared_buffers=256MB"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o", options,
            "start")  # fmt: skip
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE)
            yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DATABASE}", data
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
