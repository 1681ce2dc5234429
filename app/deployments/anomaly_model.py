"""The `anomaly_model` deployment: startup loading, the rebuild job, and per-product artifact state."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.services import Services
from app.deployments.runner import JobContext
from app.deployments.status import ArtifactState

KIND = "anomaly_model"
# Set to True once the job below is implemented; until then the API answers 409 "not available".
AVAILABLE = False


def load(services: Services) -> None:
    """Load the built artifacts into services.models at startup (no embedding or training work)."""


def run(ctx: JobContext) -> dict[str, object] | None:
    """The job: rebuild for ctx.product_id (or all products), report progress, swap into the registry."""
    raise NotImplementedError(KIND)


def states(session: Session, services: Services) -> list[ArtifactState]:
    """Per active product: current, stale (and why), missing, building or failed."""
    return []
