"""Built artifacts: the deployment kinds, the one writer of the current-artifact row, and artifact state.

A deployment kind (search index, anomaly model, manual index) is built by a job and recorded as an
`Artifact` row; `DEPLOYMENT_KINDS` is the one table of them (job kind, deploy screen, whether each product
has its own artifact) that pages, notices and the job screens read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.tables import Artifact

if TYPE_CHECKING:
    from app.core.services import Services

State = Literal["current", "stale", "missing", "building", "failed"]


@dataclass(frozen=True)
class DeploymentKind:
    """One kind of built artifact and the job that builds it."""

    kind: str  # the job kind and Artifact.kind
    slug: str  # its deploy screen is /admin/deploy/<slug>
    per_product: bool  # each product has its own current artifact (else one serves every product)

    @property
    def deploy_link(self) -> str:
        """The admin screen that rebuilds this kind."""
        return f"/admin/deploy/{self.slug}"

    @property
    def nav_key(self) -> str:
        """Translation key of the screen's name in the admin menu."""
        return f"admin.nav.deploy_{self.slug}"


DEPLOYMENT_KINDS: tuple[DeploymentKind, ...] = (
    DeploymentKind("search_index", "search", per_product=False),
    DeploymentKind("anomaly_model", "anomaly", per_product=True),
    DeploymentKind("manual_index", "manuals", per_product=True),
)
KINDS_BY_NAME: dict[str, DeploymentKind] = {k.kind: k for k in DEPLOYMENT_KINDS}
KINDS_BY_SLUG: dict[str, DeploymentKind] = {k.slug: k for k in DEPLOYMENT_KINDS}
# kind -> deploy screen URL (pages and templates read this; they keep no copy).
DEPLOY_LINKS: dict[str, str] = {k.kind: k.deploy_link for k in DEPLOYMENT_KINDS}


@dataclass
class ArtifactState:
    """One artifact's state for the admin (dashboard, deploy screens).

    `reasons` are translation keys (with `params`) saying why it is stale or missing, e.g.
    "status.stale.images_changed"; the page translates them.
    """

    kind: str  # "search_index" | "anomaly_model" | "manual_index"
    product_id: int | None
    state: State
    reasons: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    built_at: datetime | None = None
    version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# Every kind's artifact states; the application wires the deployments' reader in (app.main).
ArtifactStateReader = Callable[[Session, "Services"], list[ArtifactState]]


def record_current_artifact(
    session: Session,
    *,
    kind: str,
    product_id: int | None,
    version: str | None,
    path: str = "",
    checksum: str = "",
    meta: Mapping[str, object] | None = None,
    job_id: int | None = None,
    created_at: datetime | None = None,
) -> Artifact | None:
    """Make a new build the current artifact of its kind (for its product when the kind is per product).

    `path` and `checksum` name the version in the object storage (app.core.artifact_store). The previous
    current row(s) are kept as history. With `version` None nothing replaces them (the
    product's artifact is gone, e.g. its last manual was deleted). Adds to the session; the caller commits.
    """
    retired = update(Artifact).where(Artifact.kind == kind, Artifact.is_current.is_(True))
    if KINDS_BY_NAME[kind].per_product:
        retired = retired.where(Artifact.product_id == product_id)
    session.execute(retired.values(is_current=False))
    if version is None:
        return None
    row = Artifact(
        kind=kind,
        product_id=product_id,
        version=version,
        path=path,
        checksum=checksum,
        is_current=True,
        meta=dict(meta or {}),
        job_id=job_id,
    )
    if created_at is not None:
        row.created_at = created_at
    session.add(row)
    return row


def current_artifacts(session: Session, kind: str) -> dict[int, Artifact]:
    """The current artifact per product id of a per-product kind."""
    rows = session.scalars(select(Artifact).where(Artifact.kind == kind, Artifact.is_current.is_(True)))
    return {row.product_id: row for row in rows if row.product_id is not None}
