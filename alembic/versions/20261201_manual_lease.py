"""Manual indexing across processes: a lease table (one writer of a product's index at a time) and the job
that indexes each manual (a starting server resets only manuals whose indexer is dead)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lease")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("manual", schema=None) as batch_op:
        batch_op.add_column(sa.Column("index_job_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_manual_index_job_id_deployment_job"),
            "deployment_job",
            ["index_job_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("manual", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_manual_index_job_id_deployment_job"), type_="foreignkey")
        batch_op.drop_column("index_job_id")
    op.drop_table("lease")
