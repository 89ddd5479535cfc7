"""Alembic environment: runs against the URL handed in by dispatcher.db.upgrade."""

from __future__ import annotations

from alembic import context

from dispatcher.domain.db import make_engine
from dispatcher.domain.models import Base

config = context.config
engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
