"""Alembic environment: runs against the URL handed in by dispatcher.db.upgrade."""

from __future__ import annotations

from alembic import context

from dispatcher.domain.db import make_engine
from dispatcher.domain.models import Base

config = context.config
engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations rebuild a table by copy, drop and rename; with foreign keys enforced, dropping
        # the old table would cascade to the rows that refer to it. SQLite ignores this pragma inside a
        # transaction, so it goes to the driver's connection before Alembic begins one; the foreign
        # keys are checked once the migrations are done.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration left {len(broken)} rows whose foreign keys point nowhere")
engine.dispose()
