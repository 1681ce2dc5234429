"""Search step API shapes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SearchRequest(BaseModel):
    """Search the defect gallery; product_id restricts it to one product (null: the upload's, or all)."""

    top_k: int = Field(default=5, ge=1, le=20)
    product_id: int | None = None


class NamedRef(BaseModel):
    """A product or defect type as shown next to a match."""

    id: int
    code: str
    name: str


class SearchMatch(BaseModel):
    """One similar known defect image."""

    image_id: int
    score: float
    image_url: str
    file_name: str
    product: NamedRef
    defect_type: NamedRef | None


class VerdictRead(BaseModel):
    """The likely (product, defect type), or unknown when score or margin is under its threshold."""

    product_id: int | None
    defect_type_id: int | None
    score: float
    margin: float
    is_unknown: bool
    product: NamedRef | None = None
    defect_type: NamedRef | None = None
    min_score: float
    min_margin: float
    # "settings" (admin override), "calibrated" (per product at build time) or "default"
    threshold_source: str
    # Calibrated probability (0-1) that the named defect type is right (leave-one-out Platt fit per product
    # at build time); None when the product has no identification data yet (built before, or no images).
    confidence: float | None = None
    # "region" (anomalous region + whole image, the product's anomaly model exists) or "whole"
    method: str = "whole"


class SearchRead(BaseModel):
    """Matches best first, the verdict, and which match the worker chose as TOP-1."""

    inspection_id: int
    matches: list[SearchMatch]
    verdict: VerdictRead
    chosen_image_id: int | None = None
    top_k: int
    product_id: int | None = None
    embedder: str
    is_stale: bool = False
    elapsed_ms: float
    next_product_id: int | None = None


class ChooseRequest(BaseModel):
    """Make one of the matches the TOP-1 (null: back to the best match)."""

    image_id: int | None = None


class RegisterRequest(BaseModel):
    """Add the inspected photo to the catalog as a defect image of this product and defect type."""

    product_id: int
    defect_type_id: int


class RegisterPreview(BaseModel):
    """The file name the photo would get."""

    file_name: str


class RegisterRead(BaseModel):
    """The new catalog image; is_searchable says whether the live defect gallery has it already."""

    image_id: int
    file_name: str
    image_url: str
    product: NamedRef
    defect_type: NamedRef
    is_searchable: bool


class GalleryStatus(BaseModel):
    """What the worker sees about the search index on the upload page."""

    embedder: str | None
    defect_images: int
    normal_images: int
    built_at: str | None
    state: str  # "current" | "stale" | "missing"
