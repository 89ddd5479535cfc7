"""An index on deliveries.destination: every fax claim checks the number's line (another fax to it in progress,
the last call's end) and read the whole ledger without it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 18:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_destination", ["destination"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_destination")
