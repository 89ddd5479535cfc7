"""Supporter lists apart from campaigns, consent per member, the suppression list, and erasure

- ``supporter_lists``; ``supporters`` become members of a list (consent, its date and source, locale,
  custom fields) instead of rows of one campaign. A campaign's existing supporters move to a list named
  after the campaign, with no consent recorded: nobody receives a copy until their consent is imported.
- ``campaign_lists``: the lists a campaign copies; ``campaigns.copies``: when its copies go.
- ``suppressions``: addresses (as SHA-256) that receive no copy: unsubscribes, hard bounces, complaints.
- ``deliveries.supporter_id`` is set to NULL, not cascaded, when a supporter is erased: counts stay.
- The event log stays append-only, except that an event's ``data`` (provider evidence, which may hold an
  address) may be cleared, and nothing else changed, when the person it concerns is erased.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "supporter_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supporter_lists")),
        sa.UniqueConstraint("name", name=op.f("uq_supporter_lists_name")),
    )
    op.create_table(
        "campaign_lists",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_lists_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["supporter_lists.id"],
            name=op.f("fk_campaign_lists_list_id_supporter_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "list_id", name=op.f("pk_campaign_lists")),
    )
    op.create_table(
        "suppressions",
        sa.Column("email_sha256", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_suppressions_campaign_id_campaigns"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("email_sha256", name=op.f("pk_suppressions")),
    )
    # a plain ADD COLUMN: rebuilding campaigns on SQLite would trip the event log's triggers, which name it
    op.add_column(
        "campaigns", sa.Column("copies", sa.String(length=20), nullable=False, server_default="after-delivery")
    )

    with op.batch_alter_table("supporters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("list_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("locale", sa.String(length=35), nullable=True))
        batch_op.add_column(sa.Column("consent", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("consent_source", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("fields", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    _move_campaign_supporters_to_lists()
    with op.batch_alter_table("supporters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_supporters_campaign_id"))
        batch_op.drop_constraint(batch_op.f("uq_supporters_campaign_id_email"), type_="unique")
        batch_op.drop_constraint(batch_op.f("fk_supporters_campaign_id_campaigns"), type_="foreignkey")
        batch_op.drop_column("campaign_id")
        batch_op.alter_column("list_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("consent", existing_type=sa.Boolean(), server_default=None)
        batch_op.alter_column("fields", existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_supporters_list_id_supporter_lists"),
            "supporter_lists",
            ["list_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_unique_constraint(batch_op.f("uq_supporters_list_id_email"), ["list_id", "email"])
        batch_op.create_index(batch_op.f("ix_supporters_list_id"), ["list_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_supporters_email"), ["email"], unique=False)

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_deliveries_supporter_id_supporters"), type_="foreignkey")
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_supporter_id_supporters"),
            "supporters",
            ["supporter_id"],
            ["id"],
            ondelete="SET NULL",
        )
    _erasable_events()


def _move_campaign_supporters_to_lists() -> None:
    """Each campaign's supporters become the members of a list named after it, copied by it; no consent."""
    bind = op.get_bind()
    now = sa.func.now() if bind.dialect.name == "postgresql" else sa.literal_column("CURRENT_TIMESTAMP")
    campaigns = bind.execute(
        sa.text("SELECT DISTINCT c.id, c.name FROM campaigns c JOIN supporters s ON s.campaign_id = c.id")
    ).all()
    lists = sa.table(
        "supporter_lists", sa.column("id"), sa.column("name"), sa.column("created_at"), sa.column("updated_at")
    )
    for campaign_id, name in campaigns:
        bind.execute(sa.insert(lists).values(name=name, created_at=now, updated_at=now))
        list_id = bind.execute(sa.text("SELECT id FROM supporter_lists WHERE name = :n"), {"n": name}).scalar_one()
        bind.execute(
            sa.text("INSERT INTO campaign_lists (campaign_id, list_id, position) VALUES (:c, :l, 0)"),
            {"c": campaign_id, "l": list_id},
        )
        bind.execute(
            sa.text("UPDATE supporters SET list_id = :l WHERE campaign_id = :c"), {"c": campaign_id, "l": list_id}
        )
    supporters = sa.table(
        "supporters", sa.column("fields", sa.JSON()), sa.column("created_at"), sa.column("updated_at")
    )
    bind.execute(sa.update(supporters).values(fields={}, created_at=now, updated_at=now))


ERASABLE_PG = """
CREATE OR REPLACE FUNCTION delivery_events_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM campaigns WHERE id = OLD.campaign_id AND status = 'draft'
    ) THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.data IS NULL
        AND (to_jsonb(NEW) - 'data') = (to_jsonb(OLD) - 'data') THEN
        RETURN NEW;  -- erasure: the evidence cleared, the history unchanged
    END IF;
    RAISE EXCEPTION 'delivery_events is append-only';
END;
$$ LANGUAGE plpgsql;
"""

_EVERY_COLUMN_BUT_DATA = (
    "id",
    "delivery_id",
    "campaign_id",
    "at",
    "actor",
    "from_state",
    "to_state",
    "reason",
    "error_class",
    "provider_id",
    "provider_event_id",
)
ERASABLE_SQLITE_UPDATE = (
    "CREATE TRIGGER delivery_events_no_update BEFORE UPDATE ON delivery_events "
    "WHEN NOT (NEW.data IS NULL AND "
    + " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _EVERY_COLUMN_BUT_DATA)
    + ") BEGIN SELECT RAISE(ABORT, 'delivery_events is append-only'); END"
)


def _erasable_events() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ERASABLE_PG)
        return
    op.execute("DROP TRIGGER delivery_events_no_update")
    op.execute(ERASABLE_SQLITE_UPDATE)


def downgrade() -> None:
    raise NotImplementedError("0003 moves supporters into lists and cannot be undone; restore a backup instead")
