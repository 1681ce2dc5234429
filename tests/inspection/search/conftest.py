"""Fixtures for the search step: the real packaged EfficientNet-Lite0 (loaded once), an app that loads models,
and a small catalog of synthetic metal-plate photos (holes, scratches, clean parts)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.cli import run_migrations
from app.core.config import Settings
from app.deployments import search_index
from app.main import create_app
from app.ml.embedders import EfficientNetEmbedder
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.ml.search_images import perturbed, texture, with_hole, with_scratch


@dataclass
class CountingEmbedder:
    """The real EfficientNet-Lite0 embedder, counting the images it embedded (proves "no re-embedding")."""

    inner: EfficientNetEmbedder
    images_embedded: int = 0
    embedder_id: str = field(init=False)
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.embedder_id = self.inner.embedder_id
        self.dim = self.inner.dim

    def embed(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        self.images_embedded += len(images)
        return self.inner.embed(images, batch_size=batch_size)


@pytest.fixture(scope="session")
def real_embedder() -> EfficientNetEmbedder:
    """The packaged EfficientNet-Lite0, loaded once per test session."""
    return EfficientNetEmbedder.load("cpu")


@pytest.fixture
def embedder(real_embedder: EfficientNetEmbedder, monkeypatch: pytest.MonkeyPatch) -> CountingEmbedder:
    """The session's embedder behind a counter; every app started in the test loads this one."""
    counting = CountingEmbedder(real_embedder)
    monkeypatch.setattr(search_index, "load_embedder", lambda name, **_: counting)
    return counting


@pytest.fixture
def search_settings(tmp_path: Path) -> Settings:
    """Settings that load models at startup, schema migrated."""
    s = make_settings(tmp_path, load_models=True)
    run_migrations(s)
    return s


@pytest.fixture
def app_client(search_settings: Settings, embedder: CountingEmbedder) -> Iterator[TestClient]:
    """The app (models loaded) with admin1 and worker1."""
    with TestClient(create_app(search_settings)) as client:
        seed_users(search_settings, client)
        yield client


@pytest.fixture
def admin(app_client: TestClient) -> dict[str, str]:
    """Bearer header of admin1."""
    return bearer(app_client, "admin1", ADMIN_PASSWORD)


@pytest.fixture
def worker(app_client: TestClient) -> dict[str, str]:
    """Bearer header of worker1."""
    return bearer(app_client, "worker1", WORKER_PASSWORD)


def png(image: Image.Image) -> bytes:
    """PNG bytes of an image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def hole_photo(seed: int) -> Image.Image:
    """A plate with a hole."""
    return perturbed(with_hole(texture(seed)), seed=seed + 100)


def scratch_photo(seed: int) -> Image.Image:
    """A plate with a scratch."""
    return perturbed(with_scratch(texture(seed)), seed=seed + 100)


def clean_photo(seed: int) -> Image.Image:
    """A plate without defects."""
    return perturbed(texture(seed), seed=seed + 100)


@dataclass
class Catalog:
    """Ids of the catalog created by `make_catalog`."""

    product_id: int
    hole_id: int
    scratch_id: int
    images: dict[str, list[int]]


def upload(
    client: TestClient,
    headers: dict[str, str],
    product_id: int,
    kind: str,
    photos: list[bytes],
    defect_type_id: int | None = None,
) -> list[int]:
    """Register images over the API; returns their ids."""
    data: dict[str, Any] = {"kind": kind}
    if defect_type_id is not None:
        data["defect_type_id"] = str(defect_type_id)
    files = [("files", (f"p{i}.png", photo, "image/png")) for i, photo in enumerate(photos)]
    response = client.post(f"/api/v1/products/{product_id}/images", data=data, files=files, headers=headers)
    assert response.status_code == 201, response.text
    return [c["id"] for c in response.json()["created"]]


def make_catalog(client: TestClient, headers: dict[str, str], code: str = "plate", n: int = 4) -> Catalog:
    """A product with hole and scratch defect types, n images of each, and 3 normal images."""
    product = client.post(
        "/api/v1/products", json={"code": code, "name": f"{code} 판재", "description": ""}, headers=headers
    )
    assert product.status_code == 201, product.text
    pid = product.json()["id"]
    ids = {}
    for defect, name in (("hole", "구멍"), ("scratch", "긁힘")):
        made = client.post(
            f"/api/v1/products/{pid}/defect-types",
            json={"code": defect, "name": name, "description": ""},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        ids[defect] = made.json()["id"]
    images = {
        "hole": upload(client, headers, pid, "defect", [png(hole_photo(s)) for s in range(n)], ids["hole"]),
        "scratch": upload(
            client, headers, pid, "defect", [png(scratch_photo(s)) for s in range(10, 10 + n)], ids["scratch"]
        ),
        "normal": upload(client, headers, pid, "normal", [png(clean_photo(s)) for s in range(20, 23)]),
    }
    return Catalog(pid, ids["hole"], ids["scratch"], images)


def deploy(
    client: TestClient, headers: dict[str, str], product_id: int | None = None, timeout: float = 120
) -> dict[str, Any]:
    """Run the search_index job and wait for it to finish."""
    created = client.post(
        "/api/v1/deployments", json={"kind": "search_index", "product_id": product_id}, headers=headers
    )
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/deployments/{created.json()['id']}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError("search_index job did not finish")


def inspect(client: TestClient, headers: dict[str, str], photo: bytes, product_id: int | None = None) -> int:
    """Upload a photo to inspect; returns the inspection id."""
    data = {"product_id": str(product_id)} if product_id is not None else {}
    response = client.post(
        "/api/v1/inspections", files={"file": ("query.png", photo, "image/png")}, data=data, headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
