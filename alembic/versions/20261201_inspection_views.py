"""Several views per inspection: inspection_view rows, product view rule and labels, reference image view

Revision ID: 0011
Revises: 0013
Create Date: 2026-12-01 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0011"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy of `product` or `reference_image`: on SQLite, recreating a table
    # drops the old one, and with foreign keys on that cascades to every defect type, image and manual.
    op.add_column(
        "product", sa.Column("view_rule", sa.String(length=16), server_default="any", nullable=False)
    )
    op.add_column("product", sa.Column("views", sa.JSON(), server_default="[]", nullable=False))
    op.add_column("reference_image", sa.Column("view", sa.String(length=32), nullable=True))
    op.create_table(
        "inspection_view",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("view", sa.String(length=32), nullable=False),
        sa.Column("image_key", app.db.base.object_key_type(), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("search_result", sa.JSON(), nullable=True),
        sa.Column("anomaly_result", sa.JSON(), nullable=True),
        sa.Column("anomaly_score", sa.Float(), nullable=True),
        sa.Column("is_anomaly", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_inspection_view_inspection_id_inspection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspection_view")),
        sa.UniqueConstraint("image_key", name=op.f("uq_inspection_view_image_key")),
        sa.UniqueConstraint(
            "inspection_id", "position", name=op.f("uq_inspection_view_inspection_id_position")
        ),
        sa.UniqueConstraint("inspection_id", "view", name=op.f("uq_inspection_view_inspection_id_view")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("inspection_view", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inspection_view_inspection_id"), ["inspection_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inspection_view", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inspection_view_inspection_id"))
    op.drop_table("inspection_view")
    # Plain DROP COLUMN (SQLite 3.35+), for the same reason as above.
    op.drop_column("reference_image", "view")
    op.drop_column("product", "views")
    op.drop_column("product", "view_rule")
