"""Engines, sessions and migrations for the ledger (SQLite embedded default, PostgreSQL in production)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:  # Alembic is imported by the functions that migrate: most commands never do
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


READ_ONLY = "dispatch_read_only"  # execution option set by reading(): on SQLite, a deferred BEGIN


def make_engine(url: str, *, sqlite_busy_seconds: float = 30.0, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and enforced foreign keys.

    On SQLite a statement that meets a lock waits up to ``sqlite_busy_seconds`` before it fails with
    "database is locked" (an OperationalError, which the web app answers 503)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": sqlite_busy_seconds}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_begin(conn: Connection) -> None:
    """SQLite's own BEGIN is deferred; take the write lock at BEGIN so a read-then-write transaction
    cannot interleave with another writer (the single-writer path). A session opened by reading()
    keeps the deferred BEGIN: under WAL it reads the last committed state, neither waiting for nor
    holding the write lock."""
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener issue BEGIN IMMEDIATE
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # deleted and overwritten rows are zeroed in the file, not left in free space: an erased supporter's
    # address and name must not stay readable in the ledger's file (dispatcher/domain/privacy.py)
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Read-only work (views, the read API, the live log): never takes SQLite's write lock; rolled back
    at the end, so it must not write."""
    with factory() as session:
        session.connection(execution_options={READ_ONLY: True})
        yield session


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})  # a read: no write lock on SQLite
        return MigrationContext.configure(connection).get_current_revision()


def head_from_files() -> str | None:
    """The newest migration's revision, read from the migration files without importing Alembic (a third
    of a second that every command would wait for): the one revision no other names as its down revision."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text()
        revisions.update(re.findall(r'^revision = "([^"]+)"', source, re.MULTILINE))
        downs.update(re.findall(r'^down_revision = "([^"]+)"', source, re.MULTILINE))
    heads = revisions - downs
    return next(iter(heads)) if len(heads) == 1 else None  # several (a branch): Alembic decides


def _schema_revision(engine: Engine) -> str | None:
    """The ledger's revision, read from Alembic's table with one SELECT; None when it has none."""
    try:
        with engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            revision: str | None = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return revision
    except DBAPIError:  # no such table: a new ledger
        return None


def ensure_schema(engine: Engine) -> None:
    """The embedded SQLite ledger migrates itself; any other database must be upgraded explicitly."""
    if _schema_revision(engine) == head_from_files():  # the usual case, without importing Alembic
        return
    if current_revision(engine) == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine.url.render_as_string(hide_password=False))
        return
    from dispatcher.domain.errors import SettingsError

    raise SettingsError(
        f"the ledger at {engine.url.render_as_string(hide_password=True)} is not at the current schema: "
        "run `dispatch db upgrade`"
    )
