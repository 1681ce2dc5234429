"""Identification vectors in Milvus (``VECTOR_BACKEND=milvus``): one exact search per identification.

`app.ml.identification.ProductIdentification` ranks a product's registered defect images by
``alpha * <r_q, r_i> + (1 - alpha) * <w_q, w_i>`` (region descriptor r, whole-image embedding w). The inner
product is linear, so that is one inner-product search of the query ``[alpha * r_q ; (1 - alpha) * w_q]``
against stored rows ``[r_i ; w_i]``: the same images and scores as the numpy arrays. Hence this collection
stores rows *as given* (each half is unit length already; the concatenation is not re-normalised, unlike
`app.ml.milvus_gallery.MilvusGallery`), with a FLAT (exact) index and the product as partition key and filter.

Region descriptors are as wide as the product's anomaly features, which may differ between products while a
collection has one dimension: the region half is the build's widest, narrower descriptors are zero-padded
(padding changes no inner product). A product without descriptors stores a zero region half and is searched
with a zero region half (whole image only).

pymilvus is imported lazily, as in `app.ml.milvus_gallery`.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from app.ml.gallery import GalleryHit
from app.ml.milvus_gallery import (
    INSERT_BATCH,
    MAX_LIMIT,
    NO_LABEL,
    MilvusConfig,
    _hit,
    _id_list,
    client_for,
)

logger = logging.getLogger(__name__)

KIND = "regions"
# The key of search.json naming a version's identification collection.
META_KEY = "identification_collection"


class MilvusRegionStore:
    """Every product's identification rows ``[region ; whole]`` in one Milvus collection (one per build).

    Create with `create(...)` (a new collection) or `attach(...)` (an existing one, by name).

    Attributes:
        collection: The Milvus collection.
        whole_dim: Width of the whole-image half.
        region_dim: Width of the region half (0: no product of the build has descriptors).
    """

    def __init__(self, config: MilvusConfig, collection: str, whole_dim: int, region_dim: int) -> None:
        if whole_dim < 1 or region_dim < 0:
            raise ValueError("whole_dim must be positive and region_dim not negative")
        self.config = config
        self.collection = collection
        self.whole_dim = whole_dim
        self.region_dim = region_dim
        self._client = client_for(config)
        self._lock = threading.Lock()
        self._strong_next = False

    @property
    def dim(self) -> int:
        """Width of a stored row."""
        return self.region_dim + self.whole_dim

    @classmethod
    def create(
        cls, config: MilvusConfig, whole_dim: int, region_dim: int, *, name: str | None = None
    ) -> MilvusRegionStore:
        """A new, empty, loaded collection.

        Raises:
            ValueError: A collection of that name exists already.
        """
        from pymilvus import DataType

        name = name or f"{config.prefix}_{KIND}_{secrets.token_hex(6)}"
        client = client_for(config)
        if client.has_collection(name):
            raise ValueError(f"Milvus collection {name} exists already")
        store = cls(config, name, whole_dim, region_dim)
        description = json.dumps({"kind": KIND, "whole_dim": whole_dim, "region_dim": region_dim})
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
        schema.add_field("image_id", DataType.INT64, is_primary=True)
        schema.add_field("product_id", DataType.INT64, is_partition_key=True)
        schema.add_field("label", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=store.dim)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="IP")
        client.create_collection(name, schema=schema, consistency_level="Session")
        client.create_index(name, index)
        client.load_collection(name)
        logger.info("created Milvus collection %s (identification, %d + %d)", name, region_dim, whole_dim)
        return store

    @classmethod
    def attach(cls, config: MilvusConfig, name: str) -> MilvusRegionStore:
        """The existing collection `name` (its widths are in its description), loaded for search.

        Raises:
            LookupError: No such collection, or not an identification collection.
        """
        client = client_for(config)
        if not client.has_collection(name):
            raise LookupError(f"Milvus collection {name} does not exist")
        info = client.describe_collection(name)
        try:
            meta = json.loads(str(info.get("description", "")))
            whole_dim, region_dim = int(meta["whole_dim"]), int(meta["region_dim"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LookupError(f"Milvus collection {name} is not an identification collection") from exc
        client.load_collection(name)
        return cls(config, name, whole_dim, region_dim)

    def drop(self) -> None:
        """Drop the collection (a replaced or abandoned build)."""
        self._client.drop_collection(self.collection)
        logger.info("dropped Milvus collection %s", self.collection)

    # -- rows ---------------------------------------------------------------------------------------

    def _rows(self, whole: np.ndarray, region: np.ndarray | None) -> np.ndarray:
        """[region (zero-padded) ; whole] per row, as given (no normalisation)."""
        whole = np.asarray(whole, dtype=np.float32).reshape(-1, self.whole_dim)
        rows = np.zeros((whole.shape[0], self.dim), dtype=np.float32)
        rows[:, self.region_dim :] = whole
        if region is not None:
            region = np.asarray(region, dtype=np.float32).reshape(whole.shape[0], -1)
            if region.shape[1] > self.region_dim:
                raise ValueError(
                    f"region descriptors of width {region.shape[1]} do not fit {self.region_dim}: rebuild"
                )
            rows[:, : region.shape[1]] = region
        if not np.isfinite(rows).all():
            raise ValueError("identification vectors must be finite")
        return rows

    def put(
        self,
        product_id: int,
        image_ids: Sequence[int],
        labels: Sequence[int | None],
        whole: np.ndarray,
        region: np.ndarray | None,
    ) -> None:
        """Store (or replace) one product's images: whole (n, dw) and region (n, dr <= region_dim) or None."""
        ids = [int(i) for i in image_ids]
        if not ids:
            return
        if len(labels) != len(ids) or len(set(ids)) != len(ids):
            raise ValueError("image_ids must be unique and as many as labels")
        rows = self._rows(whole, region)
        with self._lock:
            # Delete-then-insert, as MilvusGallery.add (an upsert would ignore the partition key).
            for start in range(0, len(ids), MAX_LIMIT):
                chunk = ids[start : start + MAX_LIMIT]
                self._client.delete(self.collection, filter=f"image_id in {_id_list(chunk)}")
            self._strong_next = True
            for start in range(0, len(ids), INSERT_BATCH):
                batch = [
                    {
                        "image_id": ids[i],
                        "product_id": int(product_id),
                        "label": NO_LABEL if labels[i] is None else int(labels[i]),  # type: ignore[arg-type]
                        "vector": rows[i].tolist(),
                    }
                    for i in range(start, min(start + INSERT_BATCH, len(ids)))
                ]
                self._client.insert(self.collection, batch)

    def remove(self, image_ids: Iterable[int]) -> None:
        """Delete images by id (unknown ids are ignored)."""
        ids = sorted({int(i) for i in image_ids})
        with self._lock:
            for start in range(0, len(ids), MAX_LIMIT):
                chunk = ids[start : start + MAX_LIMIT]
                self._client.delete(self.collection, filter=f"image_id in {_id_list(chunk)}")
                self._strong_next = True

    def search(
        self, product_id: int, whole: np.ndarray, region: np.ndarray | None, k: int
    ) -> list[GalleryHit]:
        """The k best rows of one product for the query halves (already weighted), best first."""
        query = self._rows(whole, region)
        with self._lock:
            consistency = "Strong" if self._strong_next else "Session"
            self._strong_next = False
        answer = self._client.search(
            self.collection,
            data=query.tolist(),
            filter=f"product_id == {int(product_id)}",
            limit=min(max(k, 1), MAX_LIMIT),
            output_fields=["product_id", "label"],
            search_params={"metric_type": "IP", "params": {}},
            anns_field="vector",
            consistency_level=consistency,
        )
        return [_hit(h) for h in answer[0]]

    def vectors(self, product_id: int) -> dict[int, np.ndarray]:
        """image_id -> stored row of one product (tests and backup; pages of MAX_LIMIT)."""
        out: dict[int, np.ndarray] = {}
        last = -1
        while True:
            page: list[dict[str, Any]] = self._client.query(
                self.collection,
                filter=f"product_id == {int(product_id)} and image_id > {last}",
                output_fields=["image_id", "vector"],
                limit=MAX_LIMIT,
                consistency_level="Strong",
            )
            for row in page:
                out[int(row["image_id"])] = np.asarray(row["vector"], dtype=np.float32)
            if len(page) < MAX_LIMIT:
                return out
            last = max(int(row["image_id"]) for row in page)


def build_store(
    config: MilvusConfig, products: Iterable[Any], *, whole_dim: int | None = None
) -> MilvusRegionStore | None:
    """A new collection holding these `ProductIdentification` s, each attached to it (None: no products).

    The region half is as wide as the widest descriptor among them.
    """
    found = list(products)
    if not found:
        return None
    width = whole_dim or int(found[0].whole.shape[1])
    region_dim = max((int(p.region.shape[1]) for p in found if p.region is not None), default=0)
    store = MilvusRegionStore.create(config, width, region_dim)
    try:
        for product in found:
            product.attach(store)
    except Exception:
        store.drop()
        raise
    return store


def drop_saved_store(config: MilvusConfig, meta: bytes) -> bool:
    """Drop the identification collection a version's ``search.json`` names; True when one was dropped."""
    try:
        name = json.loads(meta.decode("utf-8")).get(META_KEY)
    except (ValueError, AttributeError):
        return False
    client = client_for(config)
    if not isinstance(name, str) or not client.has_collection(name):
        return False
    client.drop_collection(name)
    logger.info("dropped Milvus collection %s of a replaced version", name)
    return True
