"""Result sinks (MQTT, webhooks) and their delivery outbox with the dead-letter list

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 14:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "result_sink",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_result_sink_product_id_product"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_sink")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("result_sink", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_result_sink_product_id"), ["product_id"], unique=False)
    op.create_table(
        "sink_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sink_id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("next_attempt_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("claimed_at", app.db.base.UTCDateTime(), nullable=True),
        sa.Column("delivered_at", app.db.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_sink_delivery_inspection_id_inspection"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sink_id"],
            ["result_sink.id"],
            name=op.f("fk_sink_delivery_sink_id_result_sink"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sink_delivery")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("sink_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sink_delivery_inspection_id"), ["inspection_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sink_delivery_next_attempt_at"), ["next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_sink_delivery_sink_id"), ["sink_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sink_delivery_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("sink_delivery")
    op.drop_table("result_sink")
