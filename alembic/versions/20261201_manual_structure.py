"""Manual structure: what the parser understood per manual and the admin's section -> defect type map

Revision ID: 0002
Revises: 0010
Create Date: 2026-12-01 14:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("manual", schema=None) as batch_op:
        batch_op.add_column(sa.Column("structure", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("section_map", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("manual", schema=None) as batch_op:
        batch_op.drop_column("section_map")
        batch_op.drop_column("structure")
