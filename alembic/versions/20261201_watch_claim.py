"""Watched S3 prefixes: one claim row per object version, so that only one server takes it

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-01 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "watch_claim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=255), nullable=False),
        sa.Column("etag", sa.String(length=128), nullable=False),
        sa.Column("claimed_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["watch_folder.id"],
            name=op.f("fk_watch_claim_folder_id_watch_folder"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_claim")),
        sa.UniqueConstraint(
            "folder_id", "object_key", "etag", name=op.f("uq_watch_claim_folder_id_object_key_etag")
        ),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("watch_claim")
