"""Catalog request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CODE_PATTERN = r"^[a-z0-9_-]+$"


class ProductCreate(BaseModel):
    """A new product; `code` is unique, lower-case letters, digits, `_` and `-`."""

    code: str = Field(min_length=1, max_length=64, pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    # Several views per inspection: how the views' anomaly answers combine, and the product's view labels.
    view_rule: Literal["any", "all", "majority"] = "any"
    views: list[str] = Field(default_factory=list, max_length=32)


class ProductUpdate(BaseModel):
    """Changes to a product."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    is_active: bool | None = None
    view_rule: Literal["any", "all", "majority"] | None = None
    views: list[str] | None = Field(default=None, max_length=32)


class ProductRead(BaseModel):
    """A product."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    description: str
    is_active: bool
    view_rule: str = "any"
    views: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class ProductSummary(BaseModel):
    """A product as embedded in other responses."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str


class DefectTypeCreate(BaseModel):
    """A new defect type: `code` is the English mapping name (`scratch`), `name` the display name (`긁힘`)."""

    code: str = Field(min_length=1, max_length=64, pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)


class DefectTypeUpdate(BaseModel):
    """Changes to a defect type (the code stays: file names and galleries refer to it)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    is_active: bool | None = None


class DefectTypeRead(BaseModel):
    """A defect type."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: int
    code: str
    name: str
    description: str
    is_active: bool
    created_at: datetime


class DefectTypeSummary(BaseModel):
    """A defect type as embedded in other responses."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str


class ImageRead(BaseModel):
    """A registered image."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: int
    defect_type_id: int | None
    kind: str
    file_name: str
    original_name: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    checksum: str
    source: str
    view: str | None = None
    created_at: datetime
    image_url: str = ""


class ImageCreated(BaseModel):
    """One image accepted by an upload."""

    id: int
    file_name: str
    kind: str
    defect_type_id: int | None
    view: str | None = None


class ImageRejected(BaseModel):
    """One file refused by an upload, with the reason in the user's language."""

    file_name: str
    reason: str


class ImageUploadResult(BaseModel):
    """What an upload created and what it refused."""

    created: list[ImageCreated]
    rejected: list[ImageRejected]


class ImagePage(BaseModel):
    """A page of images."""

    items: list[ImageRead]
    total: int


class PreprocessingRead(BaseModel):
    """Per-product preprocessing switches."""

    model_config = ConfigDict(from_attributes=True)

    grayscale: bool = False
    contrast: bool = False
    equalize: bool = False
    smooth: bool = False
    normalize: bool = False


class ModelSettingsRead(BaseModel):
    """Which models are active."""

    model_config = ConfigDict(from_attributes=True)

    embedder: str
    anomaly_backbone: str
    default_generator: str
    allowed_generators: list[str]
    search_min_score: float | None = None
    search_min_margin: float | None = None


class ModelSettingsUpdate(BaseModel):
    """Changes to the active models."""

    embedder: str | None = Field(default=None, max_length=64)
    anomaly_backbone: str | None = Field(default=None, max_length=64)
    default_generator: str | None = Field(default=None, max_length=64)
    allowed_generators: list[str] | None = None
    search_min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    search_min_margin: float | None = Field(default=None, ge=0.0, le=2.0)


class ModelChoiceRead(BaseModel):
    """One model choice with whether this server can run it and why, in the reader's language."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    label: str
    is_available: bool
    reason: str
