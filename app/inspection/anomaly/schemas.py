"""Anomaly step API shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AnomalyRequest(BaseModel):
    """Which product model to use and, optionally, the normal image to compare against."""

    product_id: int | None = None
    reference_image_id: int | None = None


class RegionRead(BaseModel):
    """An anomalous area as a box in the photo's pixels, with its peak anomaly value."""

    x: int
    y: int
    width: int
    height: int
    score: float


class ReferenceImageRead(BaseModel):
    """The normal image the photo is compared with."""

    id: int
    image_url: str


class AnomalyRead(BaseModel):
    """The anomaly check of one inspection (the contract in API.md, plus display helpers)."""

    product_id: int
    score: float
    threshold: float
    is_anomaly: bool
    regions: list[RegionRead] = Field(default_factory=list)
    reference_image: ReferenceImageRead | None
    heatmap_url: str
    mask_url: str
    overlay_url: str
    comparison_url: str
    pixel_threshold: float
    image_width: int
    image_height: int
    elapsed_ms: float
    # Several views per inspection: the view this answer is about and which memory bank checked it ("view":
    # the product's bank for this view; "product": the product's view-less bank, as a fallback).
    view: str | None = None
    bank: str | None = None
    is_fallback: bool = False
    # On the combined answer of a several-view inspection: each view's answer, and how they combined
    # ({"rule","is_anomaly","deciding_view","deciding_region","anomalous_views","views"}).
    views: list[dict[str, Any]] | None = None
    combination: dict[str, Any] | None = None
