"""Manual bodies (re-exported from the catalog schemas, where the shared read model lives)."""

from app.catalog.schemas import ManualRead

__all__ = ["ManualRead"]
