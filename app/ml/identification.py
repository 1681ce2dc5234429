"""Region-aware defect identification: match the defect, not the whole photo.

The product's PatchCore model already knows where a photo differs from good parts. A *region descriptor*
pools, inside the anomalous region, each patch's *residual* (its backbone feature minus its nearest normal
patch in the memory bank: what is there that a good part does not have), each patch weighted by how
anomalous it is (its distance to that normal patch). A gallery defect image's region comes from
its uploaded mask when there is one (weighted by the anomaly map inside the mask), else from its anomaly
map against the product's normal images, exactly like a query's.

Identification compares a query with the product's registered defect images by
``alpha * region cosine + (1 - alpha) * whole-image cosine`` and votes over the 10 best like the
whole-image verdict (`app.ml.verdict.compute_verdict`). ``alpha`` is chosen per product by leave-one-out
over its registered defect images (0 = whole image only, when the region does not help there). Products
without an anomaly model (no normal images yet) use the whole image only.

Confidence: a Platt (logistic) fit of "the leave-one-out answer was right" on the vote margin, per product,
with Platt's prior-smoothed targets so a handful of images cannot give 0 or 1. A stated 0.9 is right about
9 times in 10 on held-out photos of the registered types (bench/identification_bench.py measures it).
The answer is unknown when the confidence is under 0.5 or the best similarity is under ``min_score``
(the 5th percentile of leave-one-out nearest-same-type similarities: nothing registered looks like it).

Everything here is pure computation on arrays and the public PatchCore attributes (extractor, config,
index, memory_bank); the deployment job and the search step do the I/O.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from app.core.fileio import atomic_write_bytes
from app.ml.errors import ArtifactError
from app.ml.gallery import GalleryHit
from app.ml.patchcore import PatchCore
from app.ml.verdict import MIN_CALIBRATION_IMAGES, compute_verdict

VOTE_K = 10
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
UNKNOWN_BELOW = 0.5
SCORE_PERCENTILE = 5.0
# Patches weaker than this share of the strongest patch distance are not part of the anomalous region.
REGION_PEAK_SHARE = 0.5
FORMAT_VERSION = 1
WHOLE = "whole"
REGION = "region"


def model_fingerprint(model: PatchCore) -> str:
    """Cheap identity of an anomaly model's memory bank (descriptors of another bank are not comparable)."""
    bank = model.memory_bank
    digest = hashlib.sha256(f"{bank.shape}:{model.config.backbone}:{model.config.image_size}".encode())
    digest.update(np.ascontiguousarray(bank[:: max(1, bank.shape[0] // 256)]).tobytes())
    return digest.hexdigest()[:16]


def _mask_weights(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Share of each (h, w) patch cell covered by the boolean mask."""
    picture = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    small = picture.resize((w, h), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def _l2(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


@torch.inference_mode()
def describe_region(model: PatchCore, image: Image.Image, mask: np.ndarray | None = None) -> np.ndarray:
    """The region descriptor of one photo (L2-normalised float32 vector of the feature width).

    Args:
        model: The product's anomaly model (its backbone and normal memory bank).
        image: The photo as the anomaly model sees it (`anomaly_model.prepare`).
        mask: Optional boolean (H, W) defect mask of the image (an uploaded mask); None: the region is
            where the photo's patches are farthest from the normal bank (>= half the strongest distance).

    Returns:
        The pooled residuals (feature minus nearest normal patch), L2-normalised. Pooling the features
        themselves was tried too: they carry the background around the defect, so a pit photographed on the
        scratches' fixture matched the scratches (tests/ml/test_identification.py has that case).
    """
    batch = model.extractor.preprocess([image], model.config.image_size)
    feats = model.extractor.embed(batch, model.config.feature_dim)[0]
    h, w, d = feats.shape
    flat = np.ascontiguousarray(feats.reshape(-1, d).cpu().numpy(), dtype=np.float32)
    dist2, nearest = model.index.search(flat, 1)
    dist = np.sqrt(np.maximum(dist2[:, 0], 0.0))
    weights = np.zeros_like(dist)
    if mask is not None and np.asarray(mask).any():
        weights = _mask_weights(mask, h, w) * dist
    if not weights.any():
        cut = max(float(np.median(dist)), REGION_PEAK_SHARE * float(dist.max()))
        weights = np.maximum(dist - cut, 0.0)
    if not weights.any():  # a perfectly flat map: the strongest patch
        weights[int(dist.argmax())] = 1.0
    weights = weights / weights.sum()
    residual = weights @ (flat - model.memory_bank[nearest[:, 0]])
    return _l2(residual).astype(np.float32)


@dataclass(frozen=True)
class Platt:
    """confidence = 1 / (1 + exp(-(a * margin + b)))."""

    a: float
    b: float

    def __call__(self, margin: float) -> float:
        z = self.a * margin + self.b
        return float(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))))


def fit_platt(margins: Sequence[float], correct: Sequence[bool], iterations: int = 200) -> Platt:
    """Platt scaling with the prior-smoothed targets of Platt (1999), fitted by Newton's method.

    Args:
        margins: Leave-one-out vote margins.
        correct: Whether each leave-one-out answer was right.
        iterations: Newton steps (converges in a few dozen).

    Returns:
        The fitted sigmoid; a flat one at the smoothed accuracy when there is nothing to fit.
    """
    x = np.asarray(margins, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if x.size == 0:
        return Platt(0.0, 0.0)
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    a, b = 0.0, math.log((n_pos + 1.0) / (n_neg + 1.0))
    for _ in range(iterations):
        z = np.clip(a * x + b, -50, 50)
        p = 1.0 / (1.0 + np.exp(-z))
        g = np.array([np.sum((p - t) * x), np.sum(p - t)])
        s = p * (1 - p) + 1e-9
        hess = np.array([[np.sum(s * x * x), np.sum(s * x)], [np.sum(s * x), np.sum(s)]])
        hess += np.eye(2) * 1e-6
        step = np.linalg.solve(hess, g)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    if a < 0:  # a larger margin must never mean less confidence: fall back to the flat accuracy
        return Platt(0.0, math.log((n_pos + 1.0) / (n_neg + 1.0)))
    return Platt(a, b)


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins and the reliability table (bins with answers only)."""
    conf = np.asarray(confidences, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0, []
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        picked = which == b
        if not picked.any():
            continue
        gap = abs(float(conf[picked].mean()) - float(right[picked].mean()))
        ece += gap * picked.sum() / conf.size
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(picked.sum()),
                "confidence": float(conf[picked].mean()),
                "accuracy": float(right[picked].mean()),
            }
        )
    return float(ece), table


@dataclass(frozen=True)
class Calibration:
    """How one way of matching (whole image, or region + whole) is weighed and trusted on a product."""

    alpha: float
    platt: Platt
    min_score: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {"alpha": self.alpha, "a": self.platt.a, "b": self.platt.b, "min_score": self.min_score}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of to_dict."""
        return cls(float(data["alpha"]), Platt(float(data["a"]), float(data["b"])), float(data["min_score"]))


DEFAULT_CALIBRATION = Calibration(0.0, Platt(0.0, 0.0), -1.0)


@dataclass(frozen=True)
class Identified:
    """An identification answer.

    Args:
        defect_type_id: The chosen defect type (None: unlabelled images, or no images).
        score: Best combined similarity of the chosen type.
        margin: Gap to the runner-up type.
        confidence: Calibrated probability that the type is right.
        is_unknown: Confidence under 0.5 or score under min_score.
        method: "region" (region + whole image) or "whole".
        alpha: Weight of the region similarity used.
    """

    defect_type_id: int | None
    score: float
    margin: float
    confidence: float
    is_unknown: bool
    method: str
    alpha: float


class RegionStore(Protocol):
    """Where a product's identification rows may live instead of being searched in memory (Milvus).

    `app.ml.milvus_regions.MilvusRegionStore` implements it: rows ``[region ; whole]``, searched by inner
    product with the weighted query halves, filtered by product.
    """

    def put(
        self,
        product_id: int,
        image_ids: Sequence[int],
        labels: Sequence[int | None],
        whole: np.ndarray,
        region: np.ndarray | None,
    ) -> None: ...

    def remove(self, image_ids: Sequence[int]) -> None: ...

    def search(
        self, product_id: int, whole: np.ndarray, region: np.ndarray | None, k: int
    ) -> list[GalleryHit]: ...

    region_dim: int

    def vectors(self, product_id: int) -> dict[int, np.ndarray]: ...


@dataclass
class ProductIdentification:
    """One product's registered defect images as identification sees them.

    Args:
        product_id: The product.
        image_ids: Catalog image ids, in row order.
        labels: Defect type id of each image (None = unlabelled).
        whole: (n, dw) whole-image embeddings (the search embedder's, L2-normalised).
        region: (n, dr) region descriptors, or None when the product has no anomaly model.
        fingerprint: `model_fingerprint` of the anomaly model the descriptors came from ("" without).
        calibrations: "whole" and (with descriptors) "region" -> Calibration.
        report: The leave-one-out report (see `leave_one_out_report`).
        store: Where identification searches (None: the arrays here); see `attach`.
        released: The arrays were let go (`release_arrays`): `whole` and `region` hold no rows, only their
            widths; the rows are in `store`.
    """

    product_id: int
    image_ids: list[int]
    labels: list[int | None]
    whole: np.ndarray
    region: np.ndarray | None = None
    fingerprint: str = ""
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    store: RegionStore | None = field(default=None, repr=False, compare=False)
    released: bool = field(default=False, repr=False, compare=False)

    def attach(self, store: RegionStore, *, fill: bool = True) -> None:
        """Search `store` from now on; `fill`: first write this product's rows into it."""
        if fill and self.image_ids:
            whole, region = self.arrays()  # read back from the old store when released
            store.put(self.product_id, self.image_ids, self.labels, whole, region)
        self.store = store

    def copy(self) -> ProductIdentification:
        """An independent copy (same store): a build re-attaches it, the serving one stays as it is."""
        return replace(
            self,
            image_ids=list(self.image_ids),
            labels=list(self.labels),
            calibrations=dict(self.calibrations),
            report=dict(self.report),
        )

    def release_arrays(self) -> None:
        """Keep only ids and labels in memory: the rows live in the attached store.

        With Milvus holding the identification rows, a gallery of millions of images needs no copy in every
        server's memory (1M images of 1280 + 152 floats: 5.7 GB each). Registrations and deletions then
        go to the store alone; `arrays` reads the rows back when a version is saved or rebuilt.

        Raises:
            ValueError: No store is attached.
        """
        if self.store is None:
            raise ValueError("only identification attached to a store can release its arrays")
        self.whole = np.empty((0, self.whole.shape[-1]), dtype=np.float32)  # the widths stay known
        if self.region is not None:
            self.region = np.empty((0, self.region.shape[-1]), dtype=np.float32)
        self.released = True

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(whole, region) in `image_ids` order: the arrays here, or, when released, read from the store.

        Raises:
            ArtifactError: The store lost rows of registered images.
        """
        if not self.released or self.store is None:  # release_arrays needs a store, and nothing detaches
            return self.whole, self.region
        rows = self.store.vectors(self.product_id)
        missing = [i for i in self.image_ids if i not in rows]
        if missing:
            raise ArtifactError(
                f"the store lost identification rows of {len(missing)} images of product {self.product_id}"
            )
        if not self.image_ids:
            return self.whole, self.region  # no rows: the empty arrays of the right widths
        stacked = np.stack([rows[i] for i in self.image_ids])
        whole = np.ascontiguousarray(stacked[:, self.store.region_dim :], dtype=np.float32)
        if self.region is None:
            return whole, None
        return whole, np.ascontiguousarray(stacked[:, : self.region.shape[-1]], dtype=np.float32)

    @property
    def count(self) -> int:
        """Registered defect images known to identification."""
        return len(self.image_ids)

    def add(self, image_id: int, label: int | None, whole: np.ndarray, region: np.ndarray | None) -> None:
        """Add (or replace) one image in O(1) amortised; calibrations stay until the next build."""
        whole_row = _l2(np.asarray(whole, dtype=np.float32).reshape(-1))
        if image_id in self.image_ids:
            self.remove([image_id])
        if self.region is not None and region is None:
            # An image without a descriptor would break the region comparison: whole-image only from now.
            self.region = None
            self.calibrations.pop(REGION, None)
        self.image_ids.append(int(image_id))
        self.labels.append(label)
        if not self.released:
            self.whole = np.vstack([self.whole.reshape(-1, whole_row.size), whole_row[None, :]])
            if self.region is not None and region is not None:
                self.region = np.vstack([self.region, np.asarray(region, dtype=np.float32)[None, :]])
        if self.store is not None:
            stored = None if self.region is None or region is None else np.asarray(region)[None, :]
            self.store.put(self.product_id, [int(image_id)], [label], whole_row[None, :], stored)

    def remove(self, image_ids: Sequence[int]) -> int:
        """Drop images by id; returns how many were dropped."""
        gone = {int(i) for i in image_ids}
        keep = [i for i, image_id in enumerate(self.image_ids) if image_id not in gone]
        removed = len(self.image_ids) - len(keep)
        if removed:
            self.image_ids = [self.image_ids[i] for i in keep]
            self.labels = [self.labels[i] for i in keep]
            if not self.released:
                self.whole = self.whole[keep]
                if self.region is not None:
                    self.region = self.region[keep]
            if self.store is not None:
                self.store.remove(sorted(gone))
        return removed

    def method_for(self, fingerprint: str | None) -> str:
        """ "region" when descriptors exist, were made by this anomaly model and are calibrated."""
        usable = self.region is not None and REGION in self.calibrations and fingerprint == self.fingerprint
        return REGION if usable else WHOLE

    def similarities(self, whole: np.ndarray, region: np.ndarray | None, alpha: float) -> np.ndarray:
        """Combined similarity of a query to every registered image (from the arrays: not once released)."""
        if self.released:
            raise ValueError("identification released its arrays: search the store (top)")
        sims = self.whole @ _l2(np.asarray(whole, dtype=np.float32).reshape(-1))
        if alpha > 0 and region is not None and self.region is not None:
            sims = alpha * (self.region @ np.asarray(region, dtype=np.float32)) + (1 - alpha) * sims
        return np.asarray(sims, dtype=np.float64)

    def top(
        self, whole: np.ndarray, region: np.ndarray | None, alpha: float, k: int = VOTE_K
    ) -> list[GalleryHit]:
        """The k registered images most similar to a query (image ids, combined scores, labels), best first.

        With a `store` this is one inner-product search of ``[alpha * region ; (1 - alpha) * whole]``
        there; else the arrays here (`similarities`). Both give the same images and scores.
        """
        if self.store is None:
            sims = self.similarities(whole, region, alpha)
            order = np.argsort(-sims, kind="stable")[:k]
            return [
                GalleryHit(self.image_ids[int(i)], float(sims[i]), self.product_id, self.labels[int(i)])
                for i in order
            ]
        query_whole = _l2(np.asarray(whole, dtype=np.float32).reshape(-1))
        query_region = None
        if alpha > 0 and region is not None and self.region is not None:
            query_whole = (1 - alpha) * query_whole
            query_region = alpha * np.asarray(region, dtype=np.float32).reshape(-1)
        return self.store.search(self.product_id, query_whole, query_region, k)

    def identify(
        self, whole: np.ndarray, region: np.ndarray | None = None, *, fingerprint: str | None = None
    ) -> Identified:
        """Identify a query photo of this product.

        Args:
            whole: Its whole-image embedding.
            region: Its region descriptor (None: whole image only).
            fingerprint: `model_fingerprint` of the anomaly model that described the region.

        Returns:
            The answer; unknown with no type when the product has no images.
        """
        method = self.method_for(fingerprint) if region is not None else WHOLE
        calibration = self.calibrations.get(method, DEFAULT_CALIBRATION)
        alpha = calibration.alpha if method == REGION else 0.0
        if not self.image_ids:
            return Identified(None, 0.0, 0.0, 0.0, True, method, alpha)
        hits = self.top(whole, region, alpha)
        return _decide_hits(hits, calibration, method, alpha)

    # -- persistence --------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write one .npz (arrays + JSON metadata) atomically (when released, rows read from the store)."""
        whole, region = self.arrays()
        meta = {
            "format_version": FORMAT_VERSION,
            "product_id": self.product_id,
            "labels": self.labels,
            "fingerprint": self.fingerprint,
            "calibrations": {k: c.to_dict() for k, c in self.calibrations.items()},
            "report": self.report,
        }
        arrays: dict[str, np.ndarray] = {
            "image_ids": np.asarray(self.image_ids, dtype=np.int64),
            "whole": np.asarray(whole, dtype=np.float32),
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        }
        if region is not None:
            arrays["region"] = np.asarray(region, dtype=np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> ProductIdentification:
        """Read a file written by `save`.

        Raises:
            ArtifactError: Missing or unreadable file.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                if meta.get("format_version") != FORMAT_VERSION:
                    raise ArtifactError(f"{path}: unsupported identification format")
                return cls(
                    product_id=int(meta["product_id"]),
                    image_ids=[int(i) for i in data["image_ids"].tolist()],
                    labels=[None if v is None else int(v) for v in meta["labels"]],
                    whole=np.asarray(data["whole"], dtype=np.float32),
                    region=np.asarray(data["region"], dtype=np.float32) if "region" in data else None,
                    fingerprint=str(meta.get("fingerprint", "")),
                    calibrations={
                        str(k): Calibration.from_dict(v) for k, v in (meta.get("calibrations") or {}).items()
                    },
                    report=dict(meta.get("report") or {}),
                )
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"identification data {path} is unreadable: {exc}") from exc


def _decide(
    sims: np.ndarray,
    labels: Sequence[int | None],
    product_id: int,
    calibration: Calibration,
    method: str,
    alpha: float,
    exclude: int | None = None,
) -> Identified:
    order = np.argsort(-sims, kind="stable")
    hits = [
        GalleryHit(int(i), float(sims[i]), product_id, labels[int(i)])
        for i in order[: VOTE_K + 1]
        if int(i) != exclude
    ][:VOTE_K]
    return _decide_hits(hits, calibration, method, alpha)


def _decide_hits(
    hits: Sequence[GalleryHit], calibration: Calibration, method: str, alpha: float
) -> Identified:
    verdict = compute_verdict(hits, min_score=-math.inf, min_margin=-math.inf)
    confidence = calibration.platt(verdict.margin)
    unknown = (
        verdict.product_id is None or confidence < UNKNOWN_BELOW or verdict.score < calibration.min_score
    )
    return Identified(
        verdict.defect_type_id, verdict.score, verdict.margin, confidence, unknown, method, alpha
    )


def _loo(
    whole: np.ndarray,
    region: np.ndarray | None,
    labels: Sequence[int | None],
    alpha: float,
    region_query: np.ndarray | None = None,
) -> tuple[list[int | None], list[float], list[float], list[float]]:
    """Leave-one-out answers: (predicted type, score, margin, best same-type similarity) per image.

    The held-out image is described as a query would be (`region_query`: from its anomaly map), the others
    as registered (`region`: from their masks when uploaded).
    """
    sims = whole @ whole.T
    if alpha > 0 and region is not None:
        queries = region if region_query is None else region_query
        sims = alpha * (queries @ region.T) + (1 - alpha) * sims
    predicted: list[int | None] = []
    scores: list[float] = []
    margins: list[float] = []
    same_best: list[float] = []
    for i in range(len(labels)):
        row = np.asarray(sims[i], dtype=np.float64)
        answer = _decide(row, labels, 0, DEFAULT_CALIBRATION, WHOLE, alpha, exclude=i)
        predicted.append(answer.defect_type_id)
        scores.append(answer.score)
        margins.append(answer.margin)
        same = [float(row[j]) for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        same_best.append(max(same) if same else math.nan)
    return predicted, scores, margins, same_best


def _calibrate(
    whole: np.ndarray,
    region: np.ndarray | None,
    labels: Sequence[int | None],
    alpha: float,
    region_query: np.ndarray | None = None,
) -> tuple[Calibration, list[int | None], list[bool], list[float], list[float]]:
    predicted, scores, margins, same_best = _loo(whole, region, labels, alpha, region_query)
    correct = [p == t for p, t in zip(predicted, labels, strict=True)]
    finite = [s for s in same_best if not math.isnan(s)]
    # Too few images to say what "similar enough" is (the 5th percentile of three is their minimum): no score
    # floor then, as the whole-image verdict does for small galleries; the calibrated confidence still gates.
    enough = len(finite) >= MIN_CALIBRATION_IMAGES
    min_score = float(np.percentile(finite, SCORE_PERCENTILE)) if enough else -1.0
    calibration = Calibration(alpha, fit_platt(margins, correct), min_score)
    return calibration, predicted, correct, scores, margins


def build_product_identification(
    product_id: int,
    image_ids: Sequence[int],
    labels: Sequence[int | None],
    whole: np.ndarray,
    region: np.ndarray | None = None,
    *,
    region_query: np.ndarray | None = None,
    fingerprint: str = "",
    type_names: dict[int, str] | None = None,
) -> ProductIdentification:
    """Calibrate identification for one product by leave-one-out over its registered defect images.

    The whole-image calibration is always made; with region descriptors, ``alpha`` is the value of
    `ALPHAS` with the best leave-one-out top-1 (ties: the larger mean margin of right answers), and the
    report describes that method.

    Args:
        product_id: The product.
        image_ids: Its defect image ids.
        labels: Their defect type ids.
        whole: (n, dw) whole-image embeddings.
        region: (n, dr) region descriptors, or None.
        region_query: (n, dr) the same images described as a query is (anomaly map, no mask); None when
            no image has a mask. Leave-one-out holds each image out in that form: an uploaded mask makes a
            gallery descriptor cleaner than any query's, and calibrating mask against mask overstates the
            confidence a real query earns.
        fingerprint: The anomaly model's `model_fingerprint` (with region).
        type_names: Defect type id -> name, for the confusion table.

    Returns:
        The calibrated product identification with its leave-one-out report.
    """
    whole = np.asarray(whole, dtype=np.float32).reshape(len(image_ids), -1)
    norms = np.linalg.norm(whole, axis=1, keepdims=True)
    whole = np.divide(whole, norms, out=np.zeros_like(whole), where=norms > 0)
    found = ProductIdentification(
        product_id, [int(i) for i in image_ids], list(labels), whole, region, fingerprint
    )
    if len(image_ids) < 2:
        found.report = leave_one_out_report([], [], [], [], WHOLE, 0.0, type_names)
        return found
    best = _calibrate(whole, None, labels, 0.0)
    found.calibrations[WHOLE] = best[0]
    method = WHOLE
    if region is not None:
        # alpha 0 is a candidate too: where the region does not help, the whole image decides.
        candidates = [
            best,
            *(_calibrate(whole, region, labels, a, region_query) for a in ALPHAS if a > 0),
        ]
        best = max(candidates, key=_quality)
        found.calibrations[REGION] = best[0]
        method = REGION
    calibration, predicted, _correct, scores, margins = best
    confidences = [calibration.platt(m) for m in margins]
    unknown = [
        c < UNKNOWN_BELOW or s < calibration.min_score for c, s in zip(confidences, scores, strict=True)
    ]
    found.report = leave_one_out_report(
        list(labels), predicted, unknown, confidences, method, calibration.alpha, type_names
    )
    return found


def _quality(
    candidate: tuple[Calibration, list[int | None], list[bool], list[float], list[float]],
) -> tuple[int, float]:
    """Leave-one-out right answers, then the larger region weight (match the defect, not the photo).

    Ties go to the region because leave-one-out cannot see a confound the gallery shares with its labels
    (every scratch photographed on one fixture): the whole image looks perfect there and fails on the line.
    """
    return sum(candidate[2]), candidate[0].alpha


def leave_one_out_report(
    truth: Sequence[int | None],
    predicted: Sequence[int | None],
    unknown: Sequence[bool],
    confidences: Sequence[float],
    method: str,
    alpha: float,
    type_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """What the admin sees: images, top-1, unknown rate, top-1 of the answered, ECE, confusion table.

    The confusion table counts (true type, answer) where the answer is the named type, or "unknown".
    """
    names = type_names or {}
    n = len(truth)
    confusion: dict[str, dict[str, int]] = {}
    for t, p, u in zip(truth, predicted, unknown, strict=True):
        row = confusion.setdefault(_name(t, names), {})
        key = "unknown" if u else _name(p, names)
        row[key] = row.get(key, 0) + 1
    right = [p == t for p, t in zip(predicted, truth, strict=True)]
    answered = [r for r, u in zip(right, unknown, strict=True) if not u]
    ece, _ = expected_calibration_error(confidences, right)
    return {
        "images": n,
        "method": method,
        "alpha": alpha,
        "top1": round(sum(right) / n, 4) if n else None,
        "unknown_rate": round(sum(unknown) / n, 4) if n else None,
        "answered_top1": round(sum(answered) / len(answered), 4) if answered else None,
        "ece": round(ece, 4) if n else None,
        "confusion": confusion,
    }


def _name(type_id: int | None, names: dict[int, str]) -> str:
    if type_id is None:
        return "-"
    return names.get(type_id, str(type_id))
