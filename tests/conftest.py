"""Shared fixtures: a fresh ledger on SQLite and on the real PostgreSQL server, the example campaign."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import db

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "campaigns" / "north-korean-refugees" / "campaign.toml"
PG_ADMIN_URL = os.environ.get("DISPATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def example_file() -> Path:
    return EXAMPLE


def _fresh_postgres_database(*, template: str | None = None) -> tuple[str, str]:
    """Create a throw-away database on the real server, so parallel runs never share state; with
    ``template``, a copy of that (migrated) database."""
    name = f"dispatch_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_postgres_database(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite ledger migrated by Alembic; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("migrated") / "ledger.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """One database migrated by Alembic on the PostgreSQL server; each test gets a copy (CREATE DATABASE
    ... TEMPLATE), which is much quicker than running the migrations again."""
    name, url = _fresh_postgres_database()
    try:
        db.upgrade(url)  # disposes its engine: a template must have no open connection
        yield name
    finally:
        _drop_postgres_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty ledger: SQLite file, or a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    name, url = _fresh_postgres_database(template=request.getfixturevalue("migrated_postgres"))
    try:
        yield url
    finally:
        _drop_postgres_database(name)


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(db_url)
    yield db.session_factory(engine)
    engine.dispose()


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """Commands run in this process configure the root logger (dispatcher/processes/logs.py): undo it."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
