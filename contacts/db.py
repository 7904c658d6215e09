"""Engine, sessions and migrations for the contact database.

SQLite is the embedded default (WAL, so the API, worker and CLI can share one file); PostgreSQL is
the production path through ``DRIP_DATABASE_URL``. The schema is owned by Alembic from the first
table on: ``migrate`` is the only way tables are created, in dev as in production.

Every ``drip worker``, ``drip api`` and ``drip db upgrade`` migrates on start, so a deployment
starts many at once: ``migrate`` holds a lock across processes while it reads the schema's version
and upgrades it (``migration_lock``), and the others wait, then find nothing left to do.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import Session

from contacts.cleaning import dumps_json

__all__ = [
    "alembic_config",
    "create_db_engine",
    "migrate",
    "migrated_engine",
    "migration_lock",
    "session_scope",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: the PostgreSQL advisory lock every drip version takes around migrations ("drip" in ASCII);
#: advisory locks are per database, so databases on one server do not wait for each other
MIGRATION_LOCK_KEY = 0x64726970

log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; for SQLite the folder is created and WAL mode switched on.

    Every JSON column is written through ``cleaning.dumps_json``, which refuses a value that
    would break queries over the other rows (a non-finite number, a NUL, a lone surrogate),
    whichever code path tries to store it."""
    kwargs.setdefault("json_serializer", dumps_json)
    sa_url = sa.make_url(url)
    if sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database and sa_url.database != ":memory:":
            Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = sa.create_engine(sa_url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(sa_url, **kwargs)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # the ini parser interpolates %: a URL-encoded password or option must reach Alembic intact
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``; safe to call on every start, from any number of
    processes at once (they take turns under ``migration_lock``)."""
    with migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


@contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    """An engine on ``url`` with its schema brought up to date, disposed of afterwards: what a
    one-shot command needs (the CLI's subcommands open one each)."""
    engine = create_db_engine(url)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's migration lock: one process at a time reads the schema's version and
    upgrades it, the next one then sees the new version and has nothing to do.

    Without it, processes started together on a fresh database all found it empty and all
    created the tables and the ``alembic_version`` row (a UniqueViolation for all but one).
    PostgreSQL: a session-level advisory lock on a connection of its own, released by unlocking
    or, if that connection dies, by the server. SQLite: ``flock`` on a file beside the database
    (``<file>.migrate-lock``); SQLite's own write lock cannot do it, as pysqlite runs DDL outside
    transactions and a waiter would give up after the busy timeout. The wait has no limit: a
    long migration holds the others as long as it runs."""
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(engine):
            yield
        return
    database = engine.url.database
    if (
        backend != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        yield  # one process's own database, or a backend drip does not run on
        return
    lock_path = Path(f"{database}.migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is migrating %s; waiting for it", database)
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    key = {"key": MIGRATION_LOCK_KEY}
    with engine.connect() as conn:
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), key).scalar_one():
            log.info("another process is migrating the database; waiting for it")
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), key)
        conn.commit()  # the lock is the session's: not left idle in a transaction meanwhile
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), key)
                conn.commit()
            except sa.exc.DBAPIError:  # the connection broke: closing it frees the lock
                conn.invalidate()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed if the block succeeds, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
