"""The search step: similar known defects, the verdict, registering the photo as a new defect."""

from __future__ import annotations

from PIL import Image
from sqlalchemy.orm import Session

from app.core.services import Services


def nearest_normal_images(
    session: Session, *, services: Services, image: Image.Image, product_id: int, k: int = 1
) -> list[int]:
    """Ids of the product's normal images most similar to `image`, best first ([] without a normal gallery).

    The anomaly step uses the first as the reference image it compares against.
    """
    return []
