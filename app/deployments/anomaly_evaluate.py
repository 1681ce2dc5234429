"""`defectlens evaluate anomaly`: score a product's built model on images outside its memory bank.

An offline check for the admin (run from the command line), apart from building: it reads the current
artifact, the registered defect images and the demo data's held-out images and masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.catalog import service as catalog_service
from app.core.artifacts import current_artifacts
from app.core.errors import ConflictError, NotFoundError
from app.core.services import Services
from app.demo.manifest import demo_holdout, demo_masks
from app.deployments.anomaly_model import KIND, artifact_dir
from app.ml.anomaly_eval import evaluation_summary, read_mask
from app.ml.anomaly_runtime import load_prepared, prepare
from app.ml.patchcore import PatchCore
from app.ml.preprocessing import decode_image

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _image_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _mask_for(name: str, masks_dir: Path | None, demo: Mapping[str, Path]) -> Path | None:
    if masks_dir is not None:
        stem = Path(name).stem
        for candidate in sorted(masks_dir.glob(f"{stem}.*")):
            if candidate.suffix.lower() in _IMAGE_SUFFIXES:
                return candidate
    return demo.get(name)


def evaluate_product(
    services: Services,
    product_code: str,
    *,
    masks_dir: Path | None = None,
    normals_dir: Path | None = None,
    defects_dir: Path | None = None,
) -> dict[str, Any]:
    """Score a product's built model on its defect images and on normal images outside the bank.

    Defect images: the registered ones, the demo's held-out ones and `defects_dir`. Normal images: the
    demo's held-out ones and `normals_dir` (registered normals are in the bank and would score ~0).
    Masks: `masks_dir/<image stem>.*`, else the demo's masks. Returns `evaluation_summary` plus
    "product", "version" and "built" (the evaluation stored at build time).

    Raises:
        NotFoundError: Unknown product code.
        ConflictError: The product has no built model.
    """
    settings = services.settings
    with services.session_factory() as session:
        product = catalog_service.get_product_by_code(session, code=product_code)
        if product is None:
            raise NotFoundError("errors.product_not_found", id=product_code)
        artifact = current_artifacts(session, KIND).get(product.id)
        if artifact is None:
            raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
        options = catalog_service.preprocessing_options(session, product_ids=[product.id])[product.id]
        registered = catalog_service.defect_images(session, product_id=product.id)
        session.expunge_all()
    model = PatchCore.load(
        artifact_dir(services, artifact), models_dir=settings.models_path, device=services.models.device
    )
    if model.calibration is None:
        raise ConflictError("errors.anomaly_model_missing", product=product.name, code=product.code)
    demo_normals, demo_defects = demo_holdout(settings, product_code)
    demo_mask_files = demo_masks(settings, product_code)

    def prepared_file(path: Path) -> Image.Image:
        return prepare(decode_image(path.read_bytes()), options)

    normal_pictures = [prepared_file(p) for p in [*demo_normals, *_image_files(normals_dir)]]
    defect_named: list[tuple[str, Image.Image]] = [
        (row.original_name, load_prepared(services.storage, row.object_key, options)) for row in registered
    ]
    defect_named += [(p.name, prepared_file(p)) for p in [*demo_defects, *_image_files(defects_dir)]]
    normal_out = model.detect_many(normal_pictures)
    defect_out = model.detect_many([im for _, im in defect_named])
    masks: list[np.ndarray | None] = []
    for (name, _), out in zip(defect_named, defect_out, strict=True):
        mask_path = _mask_for(name, masks_dir, demo_mask_files)
        masks.append(read_mask(mask_path, out.anomaly_map.shape) if mask_path is not None else None)
    summary = evaluation_summary(
        [o.score for o in normal_out],
        [o.score for o in defect_out],
        model.calibration.threshold,
        normal_maps=[o.anomaly_map for o in normal_out],
        defect_maps=[o.anomaly_map for o in defect_out],
        defect_masks=masks,
    )
    return {
        **summary,
        "product": product_code,
        "version": artifact.version,
        "n_masks": sum(m is not None for m in masks),
        "built": (artifact.meta or {}).get("evaluation"),
    }
