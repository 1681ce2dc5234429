"""Initial schema: users, tokens, catalog, manuals, inspections, jobs, artifacts, audit log

Revision ID: 0001
Revises:
Create Date: 2026-11-21 21:09:13.785012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

import app.db.base
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# MariaDB tables are utf8mb4 whatever the server default; SQLite ignores these.
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:

    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempt")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_attempt_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_attempt_username"), ["username"], unique=False)

    op.create_table(
        "model_setting",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("anomaly_backbone", sa.String(length=64), nullable=False),
        sa.Column("default_generator", sa.String(length=64), nullable=False),
        sa.Column("allowed_generators", sa.JSON(), nullable=False),
        sa.Column("search_min_score", sa.Float(), nullable=True),
        sa.Column("search_min_margin", sa.Float(), nullable=True),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_setting")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "product",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product")),
        sa.UniqueConstraint("code", name=op.f("uq_product_code")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("last_login_at", app.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint("role IN ('worker', 'admin')", name=op.f("ck_user_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
        sa.UniqueConstraint("username", name=op.f("uq_user_username")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_audit_log_user_id_user"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_created_at"), ["created_at"], unique=False)

    op.create_table(
        "auth_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", app.db.base.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", app.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_auth_token_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_token_token_hash")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("auth_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_token_user_id"), ["user_id"], unique=False)

    op.create_table(
        "defect_type",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_defect_type_product_id_product"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defect_type")),
        sa.UniqueConstraint("product_id", "code", name=op.f("uq_defect_type_product_id_code")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("defect_type", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_defect_type_product_id"), ["product_id"], unique=False)

    op.create_table(
        "deployment_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=200), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("is_cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("started_at", app.db.base.UTCDateTime(), nullable=True),
        sa.Column("finished_at", app.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["user.id"], name=op.f("fk_deployment_job_created_by_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_deployment_job_product_id_product"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_job")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("deployment_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_job_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_deployment_job_product_id"), ["product_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deployment_job_status"), ["status"], unique=False)

    op.create_table(
        "manual",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column(
            "object_key",
            sa.String(length=512)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=512), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=512), "mysql"),
            nullable=False,
        ),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("page_count", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("indexed_at", app.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["user.id"], name=op.f("fk_manual_created_by_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_manual_product_id_product"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual")),
        sa.UniqueConstraint("object_key", name=op.f("uq_manual_object_key")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("manual", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manual_product_id"), ["product_id"], unique=False)

    op.create_table(
        "preprocessing_setting",
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("grayscale", sa.Boolean(), nullable=False),
        sa.Column("contrast", sa.Boolean(), nullable=False),
        sa.Column("equalize", sa.Boolean(), nullable=False),
        sa.Column("smooth", sa.Boolean(), nullable=False),
        sa.Column("normalize", sa.Boolean(), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_preprocessing_setting_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_preprocessing_setting")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "artifact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["deployment_job.id"],
            name=op.f("fk_artifact_job_id_deployment_job"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_artifact_product_id_product"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("artifact", schema=None) as batch_op:
        batch_op.create_index("ix_artifact_kind_product", ["kind", "product_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_artifact_product_id"), ["product_id"], unique=False)

    op.create_table(
        "inspection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "image_key",
            sa.String(length=512)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=512), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=512), "mysql"),
            nullable=False,
        ),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("search_result", sa.JSON(), nullable=True),
        sa.Column("verdict_product_id", sa.Integer(), nullable=True),
        sa.Column("verdict_defect_type_id", sa.Integer(), nullable=True),
        sa.Column("verdict_score", sa.Float(), nullable=True),
        sa.Column("is_unknown", sa.Boolean(), nullable=True),
        sa.Column("chosen_image_id", sa.Integer(), nullable=True),
        sa.Column("anomaly_result", sa.JSON(), nullable=True),
        sa.Column("anomaly_score", sa.Float(), nullable=True),
        sa.Column("is_anomaly", sa.Boolean(), nullable=True),
        sa.Column("guidance", sa.JSON(), nullable=True),
        sa.Column("generator", sa.String(length=64), nullable=True),
        sa.Column("timings_ms", sa.JSON(), nullable=False),
        sa.Column("action_taken", sa.Text(), nullable=False),
        sa.Column("feedback_score", sa.Integer(), nullable=True),
        sa.Column("feedback_by", sa.Integer(), nullable=True),
        sa.Column("feedback_at", app.db.base.UTCDateTime(), nullable=True),
        sa.Column("registered_image_id", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(), nullable=False),
        sa.Column("completed_at", app.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "feedback_score IS NULL OR (feedback_score BETWEEN 1 AND 5)",
            name=op.f("ck_inspection_feedback_score"),
        ),
        sa.ForeignKeyConstraint(
            ["feedback_by"], ["user.id"], name=op.f("fk_inspection_feedback_by_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_inspection_product_id_product"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_inspection_user_id_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["verdict_defect_type_id"],
            ["defect_type.id"],
            name=op.f("fk_inspection_verdict_defect_type_id_defect_type"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["verdict_product_id"],
            ["product.id"],
            name=op.f("fk_inspection_verdict_product_id_product"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspection")),
        sa.UniqueConstraint("image_key", name=op.f("uq_inspection_image_key")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("inspection", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inspection_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_inspection_generator"), ["generator"], unique=False)
        batch_op.create_index(batch_op.f("ix_inspection_product_id"), ["product_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inspection_verdict_defect_type_id"), ["verdict_defect_type_id"], unique=False
        )

    op.create_table(
        "manual_chunk",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manual_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("section", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["manual_id"], ["manual.id"], name=op.f("fk_manual_chunk_manual_id_manual"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_manual_chunk_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_chunk")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("manual_chunk", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manual_chunk_manual_id"), ["manual_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_manual_chunk_product_id"), ["product_id"], unique=False)

    op.create_table(
        "reference_image",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("defect_type_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column(
            "object_key",
            sa.String(length=512)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=512), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=512), "mysql"),
            nullable=False,
        ),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("source_inspection_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('normal', 'defect')", name=op.f("ck_reference_image_kind")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["user.id"], name=op.f("fk_reference_image_created_by_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["defect_type_id"],
            ["defect_type.id"],
            name=op.f("fk_reference_image_defect_type_id_defect_type"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_reference_image_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_image")),
        sa.UniqueConstraint("object_key", name=op.f("uq_reference_image_object_key")),
        sa.UniqueConstraint("product_id", "file_name", name=op.f("uq_reference_image_product_id_file_name")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("reference_image", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_image_checksum"), ["checksum"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_reference_image_defect_type_id"), ["defect_type_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_reference_image_product_id"), ["product_id"], unique=False)
        batch_op.create_index("ix_reference_image_product_kind", ["product_id", "kind"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes; dropping them first trips MariaDB on FK-backing indexes.
    op.drop_table("reference_image")
    op.drop_table("manual_chunk")
    op.drop_table("inspection")
    op.drop_table("artifact")
    op.drop_table("preprocessing_setting")
    op.drop_table("manual")
    op.drop_table("deployment_job")
    op.drop_table("defect_type")
    op.drop_table("auth_token")
    op.drop_table("audit_log")
    op.drop_table("user")
    op.drop_table("product")
    op.drop_table("model_setting")
    op.drop_table("login_attempt")
