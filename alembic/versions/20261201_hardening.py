"""Hardening: login throttle state (atomic, per username and per address), one registration per inspection

Revision ID: 0006
Revises: 0002
Create Date: 2026-12-01 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0006"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("next_allowed_at", app.db.base.UTCDateTime(), nullable=True),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
        **TABLE_OPTIONS,
    )
    # Registrations duplicated by the old check-then-act race keep their images; only the first keeps
    # the link to its inspection, so the unique constraint can be created.
    ref = sa.table(
        "reference_image", sa.column("id", sa.Integer), sa.column("source_inspection_id", sa.Integer)
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(ref.c.id, ref.c.source_inspection_id)
        .where(ref.c.source_inspection_id.is_not(None))
        .order_by(ref.c.source_inspection_id, ref.c.id)
    ).all()
    seen: set[int] = set()
    for image_id, inspection_id in rows:
        if inspection_id in seen:
            conn.execute(sa.update(ref).where(ref.c.id == image_id).values(source_inspection_id=None))
        seen.add(inspection_id)
    with op.batch_alter_table("reference_image", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_reference_image_source_inspection_id"), ["source_inspection_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("reference_image", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_reference_image_source_inspection_id"), type_="unique")
    op.drop_table("login_throttle")
