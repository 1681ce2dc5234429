"""All ORM tables of DefectLens (one module, so the schema reads in one place)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, UTCDateTime, object_key_type, utcnow

ROLES = ("worker", "admin")
IMAGE_KINDS = ("normal", "defect")
MANUAL_STATUSES = ("pending", "indexing", "indexed", "failed")
JOB_KINDS = ("search_index", "anomaly_model", "manual_index")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
INSPECTION_STATUSES = ("uploaded", "searched", "anomaly_checked", "guided", "completed")
OUTCOME_LABELS = ("normal", "defect", "unknown", "pending")
VIEW_RULES = ("any", "all", "majority")


class User(Base):
    """A person who logs in: a line worker or an admin."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (CheckConstraint("role IN ('worker', 'admin')", name="role"),)


class AuthToken(Base):
    """A browser session or an API token; only the SHA-256 of the secret is stored."""

    __tablename__ = "auth_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "session" | "api"
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship(lazy="joined")


class LoginAttempt(Base):
    """A failed login, kept for rate limiting across restarts and processes."""

    __tablename__ = "login_attempt"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class LoginThrottle(Base):
    """Failed-login state of one username or client address: counts and the earliest next attempt.

    Updated only by compare-and-swap on `version`, so concurrent attempts can never all see "not yet
    limited" (works the same on SQLite and MariaDB).
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # "user:<name>" | "ip:<address>"
    failures: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    next_allowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Product(Base):
    """A product line whose parts are inspected."""

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Several views per inspection: how the views' anomaly answers combine (any | all | majority), and the
    # view labels the product is photographed in (empty: any well-formed label is accepted).
    # (Checked by the application, not by a CHECK constraint: adding one would make SQLite copy the table.)
    view_rule: Mapped[str] = mapped_column(String(16), default="any", server_default="any")
    views: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DefectType(Base):
    """A kind of defect of one product: `code` is the English mapping name, `name` the display name."""

    __tablename__ = "defect_type"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    product: Mapped[Product] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("product_id", "code"),)


class ReferenceImage(Base):
    """A registered normal or defect image of a product, stored in the object store."""

    __tablename__ = "reference_image"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    defect_type_id: Mapped[int | None] = mapped_column(
        ForeignKey("defect_type.id", ondelete="CASCADE"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    original_name: Mapped[str] = mapped_column(String(255), default="")
    object_key: Mapped[str] = mapped_column(object_key_type(), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(32), default="upload")  # upload | inspection | demo
    source_inspection_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The view the image shows (top, side, ct, ...); null: any view (the product's view-less memory bank).
    view: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    product: Mapped[Product] = relationship(lazy="joined")
    defect_type: Mapped[DefectType | None] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("product_id", "file_name"),
        # An inspection's photo is registered at most once, however many requests race for it.
        UniqueConstraint("source_inspection_id"),
        CheckConstraint("kind IN ('normal', 'defect')", name="kind"),
        Index("ix_reference_image_product_kind", "product_id", "kind"),
    )


class Manual(Base):
    """A product's response manual (PDF or DOCX)."""

    __tablename__ = "manual"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(object_key_type(), unique=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    page_count: Mapped[int] = mapped_column(Integer, default=0)
    checksum: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What the parser understood: {"kind", "sections": [...], "warnings": [...]} (None before indexing).
    structure: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # An admin's section -> defect type choices, by normalised section title; kept across re-indexing.
    section_map: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=dict)
    # The job that indexes (or last indexed) the manual: while it runs in a live process, a starting
    # server leaves the manual "indexing" (app.manuals.indexing.reset_abandoned).
    index_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployment_job.id", ondelete="SET NULL"), nullable=True
    )

    product: Mapped[Product] = relationship(lazy="joined")


class ManualChunk(Base):
    """A retrievable passage of a manual, with its page and the section heading it sits under."""

    __tablename__ = "manual_chunk"

    id: Mapped[int] = mapped_column(primary_key=True)
    manual_id: Mapped[int] = mapped_column(ForeignKey("manual.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    page: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(String(500), default="")
    text: Mapped[str] = mapped_column(Text)


class PreprocessingSetting(Base):
    """Per-product image preprocessing, applied to gallery images and queries alike."""

    __tablename__ = "preprocessing_setting"

    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), primary_key=True)
    grayscale: Mapped[bool] = mapped_column(Boolean, default=False)
    contrast: Mapped[bool] = mapped_column(Boolean, default=False)
    equalize: Mapped[bool] = mapped_column(Boolean, default=False)
    smooth: Mapped[bool] = mapped_column(Boolean, default=False)
    normalize: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ModelSetting(Base):
    """Which models are active (a single row, id 1)."""

    __tablename__ = "model_setting"

    id: Mapped[int] = mapped_column(primary_key=True)
    embedder: Mapped[str] = mapped_column(String(64), default="efficientnet-lite0")
    anomaly_backbone: Mapped[str] = mapped_column(String(64), default="efficientnet-lite0")
    default_generator: Mapped[str] = mapped_column(String(64), default="extractive")
    allowed_generators: Mapped[list[str]] = mapped_column(JSON, default=list)
    search_min_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    search_min_margin: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Inspection(Base):
    """One worker inspection of an uploaded image, with every step's result."""

    __tablename__ = "inspection"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(32), default="uploaded")
    image_key: Mapped[str] = mapped_column(object_key_type(), unique=True)
    original_name: Mapped[str] = mapped_column(String(255), default="")
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    # search step
    search_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    verdict_product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="SET NULL"), nullable=True
    )
    verdict_defect_type_id: Mapped[int | None] = mapped_column(
        ForeignKey("defect_type.id", ondelete="SET NULL"), nullable=True, index=True
    )
    verdict_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    is_unknown: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    chosen_image_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # anomaly step
    anomaly_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    anomaly_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    is_anomaly: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # guidance step
    guidance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    generator: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    timings_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # the worker's record
    action_taken: Mapped[str] = mapped_column(Text, default="")
    feedback_score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    feedback_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    registered_image_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the fused outcome (app/ml/outcome.py), recomputed whenever a step runs or the worker chooses
    outcome_label: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    outcome_product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="SET NULL"), nullable=True
    )
    outcome_defect_type_id: Mapped[int | None] = mapped_column(
        ForeignKey("defect_type.id", ondelete="SET NULL"), nullable=True, index=True
    )
    outcome_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome_source: Mapped[str] = mapped_column(String(16), default="auto")
    outcome_basis: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=dict)
    # who set a worker outcome (a choice or a registration), and when
    outcome_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User | None] = relationship(foreign_keys=[user_id], lazy="joined")
    outcome_product: Mapped[Product | None] = relationship(foreign_keys=[outcome_product_id], lazy="select")
    outcome_defect_type: Mapped[DefectType | None] = relationship(
        foreign_keys=[outcome_defect_type_id], lazy="select"
    )
    outcome_user: Mapped[User | None] = relationship(foreign_keys=[outcome_by], lazy="select")
    # Several views: one row per labelled photo, the first being the inspection's own photo (none: one view).
    views: Mapped[list[InspectionView]] = relationship(
        order_by="InspectionView.position",
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        CheckConstraint("feedback_score IS NULL OR (feedback_score BETWEEN 1 AND 5)", name="feedback_score"),
    )


class InspectionView(Base):
    """One labelled photo of a several-view inspection, with its own search and anomaly results."""

    __tablename__ = "inspection_view"

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspection.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    view: Mapped[str] = mapped_column(String(32))
    image_key: Mapped[str] = mapped_column(object_key_type(), unique=True)
    original_name: Mapped[str] = mapped_column(String(255), default="")
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    search_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    anomaly_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    anomaly_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    is_anomaly: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    __table_args__ = (
        UniqueConstraint("inspection_id", "view"),
        UniqueConstraint("inspection_id", "position"),
    )


class InspectionEvent(Base):
    """One entry of an inspection's append-only history: a step run, a choice, feedback, a reopening."""

    __tablename__ = "inspection_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspection.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    user: Mapped[User | None] = relationship(lazy="joined")


class DeploymentJob(Base):
    """A background job that makes registered data searchable (index, memory bank, manual index)."""

    __tablename__ = "deployment_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(200), default="")
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Which process runs the job (`server@host:pid:tag` or `worker@host:pid:tag`), when it last said it is
    # alive, and how many times a process has started it: a worker that dies mid-job leaves a stale heartbeat,
    # so another may take the job over, up to JOB_MAX_ATTEMPTS.
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Artifact(Base):
    """A built artifact (search gallery, memory bank, manual index) and what it was built from."""

    __tablename__ = "artifact"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), nullable=True, index=True
    )
    version: Mapped[str] = mapped_column(String(64))
    # The object-storage key prefix of the version (app.core.artifact_store); legacy rows: a local folder.
    path: Mapped[str] = mapped_column(String(500))
    # SHA-256 of the version's manifest in the object storage ("" for rows written before it existed).
    checksum: Mapped[str] = mapped_column(String(64), default="", server_default="")
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployment_job.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_artifact_kind_product", "kind", "product_id"),)


class Lease(Base):
    """A named lock that one process holds at a time across servers and workers (app.core.leases).

    Free when `owner` is empty or `expires_at` has passed; the holder's heartbeat keeps pushing `expires_at`.
    """

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), default="")
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeLog(Base):
    """An ordered log of catalog changes that every server applies to its live engines (scale-out).

    Servers poll the rows past the last id they applied; a gallery snapshot records the last id it includes.
    """

    __tablename__ = "change_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # image.added, image.removed, preprocessing.changed, model_settings.changed
    kind: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entity_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The server process that wrote the row (diagnostics).
    origin: Mapped[str] = mapped_column(String(200), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AuditLog(Base):
    """Who changed what in the admin console."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ResultSink(Base):
    """Where finished inspections are sent: an MQTT broker topic or an HTTP webhook (admin-configured)."""

    __tablename__ = "result_sink"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # mqtt | webhook
    # Only this product's inspections, or every product's when null.
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), nullable=True, index=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SinkDelivery(Base):
    """One message for one sink (an outbox row written with the inspection change, sent in the background)."""

    __tablename__ = "sink_delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    sink_id: Mapped[int] = mapped_column(ForeignKey("result_sink.id", ondelete="CASCADE"), index=True)
    inspection_id: Mapped[int | None] = mapped_column(
        ForeignKey("inspection.id", ondelete="SET NULL"), nullable=True, index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # pending -> sending -> delivered, or pending again with a later next_attempt_at, or failed (dead letter)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WatchFolder(Base):
    """A folder a line PC or camera drops photos into; each new photo becomes an analysed inspection."""

    __tablename__ = "watch_folder"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1000))
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"), index=True)
    # The inspections are recorded as this user (a worker account for the line).
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    settle_s: Mapped[float] = mapped_column(Float, default=2.0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WatchClaim(Base):
    """One server's claim on one version of an object in a watched S3 prefix (S3 has no atomic rename).

    The server whose insert fails on the unique constraint skips the object; the row is removed once the
    object has been moved to done/ or rejected/.
    """

    __tablename__ = "watch_claim"
    __table_args__ = (UniqueConstraint("folder_id", "object_key", "etag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("watch_folder.id", ondelete="CASCADE"))
    # The object's key relative to the folder's prefix (a top-level name, at most 200 characters).
    object_key: Mapped[str] = mapped_column(String(255))
    etag: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
