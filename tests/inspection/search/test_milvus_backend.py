"""VECTOR_BACKEND=milvus through the app: FAISS's answers on the demo data, registration and deletion.

Two apps are started on the same generated demo data set: one with the default FAISS galleries, one with
its galleries in a real Milvus server (the `milvus` 2.3 engine, `milvus_uri` fixture). Every search the
worker can make (each product's held-out defect photos, filtered by product and across all products) must
give the same images in the same order with the same scores; registering a photo and deleting an image
through the API must change both the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.storage import make_storage
from app.db.session import make_engine, make_session_factory
from app.demo.generator import DemoManifest, generate_demo_dataset
from app.demo.loader import register_dataset
from app.deployments.jobs import artifact_states
from app.main import create_app
from app.ml.milvus_gallery import MilvusConfig, MilvusGallery, client_for
from app.ml.search_runtime import SEARCH
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.inspection.search.conftest import CountingEmbedder, deploy, inspect

PREFIX = "t_app_search"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoManifest]:
    """A small generated demo data set (every product, 4 images per defect type, one held out)."""
    root = tmp_path_factory.mktemp("demo")
    return root, generate_demo_dataset(root, seed=5, size=128, normals_per_product=5, defects_per_type=4)


def _started(tmp: Path, root: Path, *, restart: bool = False, **overrides: Any) -> Iterator[TestClient]:
    settings = make_settings(tmp, load_models=True, **overrides)
    run_migrations(settings)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        register_dataset(session, storage=make_storage(settings), settings=settings, root=root)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        if not restart:
            seed_users(settings, client)
        yield client


@pytest.fixture
def apps(
    tmp_path: Path,
    demo: tuple[Path, DemoManifest],
    milvus_uri: str,
    embedder: CountingEmbedder,
) -> Iterator[tuple[TestClient, TestClient]]:
    """(FAISS app, Milvus app), both with the demo data registered and the search index built."""
    root, _ = demo
    faiss_apps = _started(tmp_path / "faiss", root)
    milvus_apps = _started(
        tmp_path / "milvus",
        root,
        vector_backend="milvus",
        milvus_uri=milvus_uri,
        milvus_collection_prefix=PREFIX,
    )
    faiss_app, milvus_app = next(faiss_apps), next(milvus_apps)
    try:
        for client in (faiss_app, milvus_app):
            job = deploy(client, bearer(client, "admin1", ADMIN_PASSWORD), timeout=300)
            assert job["status"] == "succeeded", job
        yield faiss_app, milvus_app
    finally:
        next(faiss_apps, None)
        next(milvus_apps, None)
        milvus = client_for(MilvusConfig(uri=milvus_uri))
        for name in milvus.list_collections():
            if name.startswith(PREFIX + "_"):
                milvus.drop_collection(name)


def _searched(client: TestClient, photo: bytes, product_id: int | None) -> dict[str, Any]:
    worker = bearer(client, "worker1", WORKER_PASSWORD)
    inspection_id = inspect(client, worker, photo, product_id)
    body: dict[str, Any] = client.post(
        f"/api/v1/inspections/{inspection_id}/search", json={"top_k": 10}, headers=worker
    ).json()
    return body


def _search(client: TestClient, photo: bytes, product_id: int | None) -> list[tuple[int, float, int | None]]:
    body = _searched(client, photo, product_id)
    return [(m["image_id"], m["score"], m.get("defect_type_id")) for m in body["matches"]]


def _assert_same_verdict(faiss: dict[str, Any], milvus: dict[str, Any]) -> str:
    """The identification answer (type, method, unknown, score, margin, confidence) agrees; its method."""
    want, got = faiss["verdict"], milvus["verdict"]
    keys = ("product_id", "defect_type_id", "method", "is_unknown")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert (got["score"], got["margin"]) == pytest.approx((want["score"], want["margin"]), abs=1e-5)
    assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-4)  # rounded to 4 places
    return str(got["method"])


def _assert_same(
    faiss: list[tuple[int, float, int | None]], milvus: list[tuple[int, float, int | None]]
) -> None:
    assert [m[0] for m in milvus] == [m[0] for m in faiss]
    assert [m[2] for m in milvus] == [m[2] for m in faiss]
    assert [m[1] for m in milvus] == pytest.approx([m[1] for m in faiss], abs=1e-4)


def _products(client: TestClient) -> dict[str, int]:
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    return {p["code"]: p["id"] for p in client.get("/api/v1/products", headers=admin).json()}


def test_milvus_galleries_give_the_same_results_as_faiss_on_the_demo_data(
    apps: tuple[TestClient, TestClient], demo: tuple[Path, DemoManifest], tmp_path: Path
) -> None:
    faiss_app, milvus_app = apps
    root, manifest = demo
    engine = milvus_app.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    assert all(isinstance(g, MilvusGallery) for g in engine.galleries.values())
    # The stored version names the collections and holds no vectors.
    models = tmp_path / "milvus" / "models"
    meta = json.loads(next(models.rglob("defect/gallery.json")).read_text())
    assert meta["backend"] == "milvus"
    assert meta["collection"] == engine.galleries["defect"].collection
    assert not list(models.rglob("index-*.faiss"))

    products = _products(faiss_app)
    assert products == _products(milvus_app)
    # Identification searches its own collection, named by the version.
    assert engine.regions is not None
    assert engine.identification
    assert all(found.store is engine.regions for found in engine.identification.values())
    # ... and keeps no copy of the rows in this server's memory (FAISS searches its arrays).
    assert all(found.released and found.whole.size == 0 for found in engine.identification.values())
    on_faiss = faiss_app.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    assert all(found.whole.shape[0] == found.count for found in on_faiss.identification.values())
    version = json.loads(next(models.rglob("search.json")).read_text())
    assert version["identification_collection"] == engine.regions.collection
    searched = 0
    methods = set()
    for product in manifest.products:
        for image in [i for i in product.defect_images if i.holdout]:
            photo = (root / image.path).read_bytes()
            for product_id in (products[product.code], None):
                faiss_body, milvus_body = (
                    _searched(faiss_app, photo, product_id),
                    _searched(milvus_app, photo, product_id),
                )
                faiss, milvus = (
                    [(m["image_id"], m["score"], m.get("defect_type_id")) for m in body["matches"]]
                    for body in (faiss_body, milvus_body)
                )
                assert len(faiss) == 10 or product_id is not None
                _assert_same(faiss, milvus)
                methods.add(_assert_same_verdict(faiss_body, milvus_body))
                searched += 1
    assert searched >= 2 * len(manifest.products)
    # No anomaly model is trained here: whole-image identification (the region half is covered with a real
    # PatchCore in tests/ml/test_milvus_identification.py).
    assert methods == {"whole"}

    # Rebuilds write new collections; a version the artifact store prunes gives its collections back.
    admin = bearer(milvus_app, "admin1", ADMIN_PASSWORD)
    milvus = client_for(MilvusConfig(uri=engine.galleries["defect"].config.uri))
    first = {g.collection for g in engine.galleries.values()} | {engine.regions.collection}
    for _ in range(2):
        assert deploy(milvus_app, admin, timeout=300)["status"] == "succeeded"
    rebuilt = milvus_app.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    latest = {g.collection for g in rebuilt.galleries.values()} | {rebuilt.regions.collection}
    assert not first & latest
    ours = {n for n in milvus.list_collections() if n.startswith(PREFIX + "_")}
    assert latest <= ours
    assert not first & ours  # the first build's version was pruned with its collections
    assert len(ours) == 6  # the latest build's three and the ones it replaced (kept while servers switch)


def test_registration_and_deletion_through_the_app_change_milvus_like_faiss(
    apps: tuple[TestClient, TestClient], demo: tuple[Path, DemoManifest]
) -> None:
    root, manifest = demo
    product = manifest.products[0]
    held_out = next(i for i in product.defect_images if i.holdout)
    photo = (root / held_out.path).read_bytes()
    registered: dict[int, int] = {}
    for index, client in enumerate(apps):
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        pid = _products(client)[product.code]
        types = client.get(f"/api/v1/products/{pid}/defect-types", headers=admin).json()
        type_id = next(t["id"] for t in types if t["code"] == held_out.defect_code)
        made = client.post(
            f"/api/v1/products/{pid}/images",
            data={"kind": "defect", "defect_type_id": str(type_id)},
            files=[("files", ("new.png", photo, "image/png"))],
            headers=admin,
        )
        assert made.status_code == 201, made.text
        registered[index] = made.json()["created"][0]["id"]
    assert registered[0] == registered[1]
    new_id = registered[0]
    faiss_app, milvus_app = apps
    pid = _products(milvus_app)[product.code]
    for product_id in (pid, None):
        faiss_body, milvus_body = (
            _searched(faiss_app, photo, product_id),
            _searched(milvus_app, photo, product_id),
        )
        faiss, milvus = (
            [(m["image_id"], m["score"], m.get("defect_type_id")) for m in body["matches"]]
            for body in (faiss_body, milvus_body)
        )
        assert milvus[0][0] == new_id
        assert milvus[0][1] > 0.999
        _assert_same(faiss, milvus)
        _assert_same_verdict(faiss_body, milvus_body)
    engine = milvus_app.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
    assert new_id in engine.identification[pid].image_ids
    assert engine.identification[pid].whole.size == 0  # registered in Milvus alone
    assert new_id in engine.regions.vectors(pid)

    for client in apps:
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        assert client.delete(f"/api/v1/images/{new_id}", headers=admin).status_code == 204
    for product_id in (pid, None):
        faiss_body, milvus_body = (
            _searched(faiss_app, photo, product_id),
            _searched(milvus_app, photo, product_id),
        )
        assert new_id not in [m["image_id"] for m in milvus_body["matches"]]
        _assert_same(
            *(
                [(m["image_id"], m["score"], m.get("defect_type_id")) for m in body["matches"]]
                for body in (faiss_body, milvus_body)
            )
        )
        _assert_same_verdict(faiss_body, milvus_body)
    assert new_id not in engine.regions.vectors(pid)


def test_switching_an_install_to_milvus_takes_effect_at_the_next_rebuild(
    tmp_path: Path, demo: tuple[Path, DemoManifest], milvus_uri: str, embedder: CountingEmbedder
) -> None:
    root, manifest = demo
    photo = (root / next(i for i in manifest.products[0].defect_images if i.holdout).path).read_bytes()
    first = _started(tmp_path, root)
    client = next(first)
    assert deploy(client, bearer(client, "admin1", ADMIN_PASSWORD), timeout=300)["status"] == "succeeded"
    before = _search(client, photo, None)
    next(first, None)

    switched = _started(
        tmp_path,
        root,
        restart=True,
        vector_backend="milvus",
        milvus_uri=milvus_uri,
        milvus_collection_prefix=PREFIX,
    )
    client = next(switched)
    try:
        # The FAISS build keeps serving, marked stale until a rebuild moves it into Milvus.
        _assert_same(before, _search(client, photo, None))
        states = _search_states(client)
        assert {s.state for s in states} == {"stale"}
        assert all("milvus.stale.backend_changed" in s.reasons for s in states)
        assert deploy(client, bearer(client, "admin1", ADMIN_PASSWORD), timeout=300)["status"] == "succeeded"
        engine = client.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
        assert all(isinstance(g, MilvusGallery) for g in engine.galleries.values())
        assert {s.state for s in _search_states(client)} == {"current"}
        _assert_same(before, _search(client, photo, None))
    finally:
        next(switched, None)
        milvus = client_for(MilvusConfig(uri=milvus_uri))
        for name in milvus.list_collections():
            if name.startswith(PREFIX + "_"):
                milvus.drop_collection(name)


def _search_states(client: TestClient) -> list[Any]:
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.session_factory() as session:
        return [s for s in artifact_states(session, services) if s.kind == "search_index"]
