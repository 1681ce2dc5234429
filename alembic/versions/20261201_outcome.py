"""Fused outcome on inspections and the append-only inspection event history

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-01 14:30:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

import app.db.base
from alembic import op
from app.ml.outcome import AnomalyEvidence, IdentificationEvidence, fuse_outcome

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    with op.batch_alter_table("inspection", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outcome_label", sa.String(length=16), nullable=False, server_default="pending")
        )
        batch_op.add_column(sa.Column("outcome_product_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("outcome_defect_type_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("outcome_confidence", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("outcome_source", sa.String(length=16), nullable=False, server_default="auto")
        )
        batch_op.add_column(sa.Column("outcome_basis", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("outcome_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("outcome_at", app.db.base.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_inspection_outcome_label"), ["outcome_label"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inspection_outcome_defect_type_id"), ["outcome_defect_type_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_inspection_outcome_product_id_product"),
            "product",
            ["outcome_product_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_inspection_outcome_defect_type_id_defect_type"),
            "defect_type",
            ["outcome_defect_type_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_inspection_outcome_by_user"), "user", ["outcome_by"], ["id"], ondelete="SET NULL"
        )

    op.create_table(
        "inspection_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inspection_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_inspection_event_inspection_id_inspection"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_inspection_event_user_id_user"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspection_event")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("inspection_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inspection_event_inspection_id"), ["inspection_id"], unique=False
        )

    _backfill()


def _backfill() -> None:
    """Give every existing inspection its outcome from the results it already stores (no worker choices)."""
    inspection = sa.table(
        "inspection",
        sa.column("id", sa.Integer()),
        sa.column("search_result", sa.JSON()),
        sa.column("anomaly_result", sa.JSON()),
        sa.column("outcome_label", sa.String()),
        sa.column("outcome_product_id", sa.Integer()),
        sa.column("outcome_defect_type_id", sa.Integer()),
        sa.column("outcome_confidence", sa.Float()),
        sa.column("outcome_source", sa.String()),
        sa.column("outcome_basis", sa.JSON()),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(inspection.c.id, inspection.c.search_result, inspection.c.anomaly_result))
    for row_id, search, anomaly in rows.all():
        outcome = fuse_outcome(anomaly=_anomaly(anomaly), identification=_identification(search))
        bind.execute(
            inspection.update()
            .where(inspection.c.id == row_id)
            .values(
                outcome_label=outcome.label,
                outcome_product_id=outcome.product_id,
                outcome_defect_type_id=outcome.defect_type_id,
                outcome_confidence=outcome.confidence,
                outcome_source=outcome.source,
                outcome_basis=outcome.basis,
            )
        )


def _anomaly(result: Any) -> AnomalyEvidence | None:
    try:
        return AnomalyEvidence(int(result["product_id"]), float(result["score"]), float(result["threshold"]))
    except (KeyError, TypeError, ValueError):
        return None


def _identification(result: Any) -> IdentificationEvidence | None:
    try:
        v = result["verdict"]
        return IdentificationEvidence(
            v.get("product_id"),
            v.get("defect_type_id"),
            float(v["score"]),
            float(v["margin"]),
            bool(v["is_unknown"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def downgrade() -> None:
    op.drop_table("inspection_event")  # its index goes with it (MariaDB refuses to drop an FK's index first)
    with op.batch_alter_table("inspection", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_inspection_outcome_by_user"), type_="foreignkey")
        batch_op.drop_constraint(
            batch_op.f("fk_inspection_outcome_defect_type_id_defect_type"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("fk_inspection_outcome_product_id_product"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_inspection_outcome_defect_type_id"))
        batch_op.drop_index(batch_op.f("ix_inspection_outcome_label"))
        for column in (
            "outcome_at",
            "outcome_by",
            "outcome_basis",
            "outcome_source",
            "outcome_confidence",
            "outcome_defect_type_id",
            "outcome_product_id",
            "outcome_label",
        ):
            batch_op.drop_column(column)
