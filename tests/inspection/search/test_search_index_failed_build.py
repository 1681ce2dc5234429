"""A search-index build that is cancelled or fails after it made Milvus collections (VECTOR_BACKEND=milvus)
or published its version leaves nothing behind: no collection, no stored object, no cached folder, and the
old index keeps serving."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core import artifact_store
from app.db.tables import DeploymentJob
from app.deployments import search_index
from app.main import create_app
from app.ml.milvus_gallery import MilvusConfig, client_for
from app.ml.search_runtime import SEARCH
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.inspection.search.conftest import (
    CountingEmbedder,
    deploy,
    inspect,
    make_catalog,
    png,
    scratch_photo,
)

pytestmark = pytest.mark.slow


def _leftovers(client: TestClient, milvus: Any, prefix: str) -> tuple[set[str], set[str], set[str]]:
    """Milvus collections of this deployment, stored search-index objects and cached versions."""
    services = client.app.state.services  # type: ignore[attr-defined]
    collections = {name for name in milvus.list_collections() if name.startswith(prefix + "_")}
    objects = set(services.storage.list(f"{artifact_store.PREFIX}/{search_index.KIND}/"))
    cache = artifact_store.cache_root(services.settings) / artifact_store.PREFIX / search_index.KIND
    cached = {str(path.relative_to(cache)) for path in cache.glob("*/*")} if cache.is_dir() else set()
    return collections, objects, cached


@pytest.mark.parametrize("failure", ["cancelled", "failed_after_publishing"])
def test_a_build_stopped_after_making_collections_leaves_nothing_behind(
    tmp_path: Path,
    embedder: CountingEmbedder,
    milvus_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    prefix = f"failed_{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        tmp_path,
        load_models=True,
        vector_backend="milvus",
        milvus_uri=milvus_uri,
        milvus_collection_prefix=prefix,
    )
    run_migrations(settings)
    milvus = client_for(MilvusConfig(uri=milvus_uri, prefix=prefix))
    try:
        with TestClient(create_app(settings)) as client:
            seed_users(settings, client)
            admin = bearer(client, "admin1", ADMIN_PASSWORD)
            worker = bearer(client, "worker1", WORKER_PASSWORD)
            plate = make_catalog(client, admin)
            other = make_catalog(client, admin, code="bracket")
            assert deploy(client, admin)["status"] == "succeeded"
            services = client.app.state.services  # type: ignore[attr-defined]
            serving = services.models.get(SEARCH).generation
            before = _leftovers(client, milvus, prefix)
            assert before[0], "the first build keeps its galleries in Milvus"

            made: list[str] = []
            if failure == "cancelled":
                build_store = search_index.build_store

                def build_then_cancel(*args: Any, **kwargs: Any) -> Any:
                    store = build_store(*args, **kwargs)
                    made.extend(name for name in milvus.list_collections() if name.startswith(prefix + "_"))
                    with services.session_factory() as session:  # the admin presses cancel now
                        for job in session.query(DeploymentJob).filter_by(status="running"):
                            job.is_cancel_requested = True
                        session.commit()
                    return store

                monkeypatch.setattr(search_index, "build_store", build_then_cancel)
            else:

                def fail_to_record(*args: Any, **kwargs: Any) -> Any:
                    made.extend(name for name in milvus.list_collections() if name.startswith(prefix + "_"))
                    made.extend(services.storage.list(f"{artifact_store.PREFIX}/{search_index.KIND}/"))
                    raise RuntimeError("the database went away")

                monkeypatch.setattr(search_index, "_record_artifact", fail_to_record)

            job = deploy(client, admin, product_id=plate.product_id)  # rebuild one product of two
            assert job["status"] == ("cancelled" if failure == "cancelled" else "failed"), job
            # the build had made its own collections (and stored its version) before it stopped ...
            assert set(made) - before[0] - before[1]
            # ... and none of it is left
            assert _leftovers(client, milvus, prefix) == before
            assert services.models.get(SEARCH).generation == serving
            # The other product, which the build had copied into its own collections, is still identified
            # from the serving ones.
            inspection_id = inspect(client, worker, png(scratch_photo(90)), product_id=other.product_id)
            searched = client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker)
            assert searched.status_code == 200, searched.text
            assert searched.json()["verdict"]["defect_type_id"] == other.scratch_id
    finally:
        for name in milvus.list_collections():
            if name.startswith(prefix + "_"):
                milvus.drop_collection(name)
