"""The search_index deployment job: runs with an empty registry, cancels cleanly, reports staleness."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.catalog import service as catalog_service
from app.cli import run_migrations
from app.core import changelog
from app.core.config import Settings
from app.core.jobs import JobContext
from app.db.tables import Artifact, ChangeLog, DeploymentJob, ReferenceImage
from app.deployments import search_index
from app.deployments.jobs import artifact_states
from app.main import create_app
from app.ml.errors import JobCancelled
from app.ml.search_runtime import SEARCH
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer, make_settings, seed_users
from tests.inspection.search.conftest import (
    CountingEmbedder,
    deploy,
    inspect,
    make_catalog,
    png,
    scratch_photo,
    upload,
)


def test_job_builds_from_an_empty_registry_and_the_server_uses_it_at_once(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    settings = make_settings(tmp_path, load_models=False)  # nothing loaded at startup, as from a CLI
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        worker = bearer(client, "worker1", WORKER_PASSWORD)
        catalog = make_catalog(client, admin)
        assert client.app.state.models.get(SEARCH) is None  # type: ignore[attr-defined]
        job = deploy(client, admin)
        assert job["status"] == "succeeded", job
        assert job["progress"] == 1.0
        assert "search.stages.normal" not in job["stage"]  # finished stage is "done"
        inspection_id = inspect(client, worker, png(scratch_photo(80)))
        result = client.post(f"/api/v1/inspections/{inspection_id}/search", json={}, headers=worker).json()
        assert result["verdict"]["defect_type_id"] == catalog.scratch_id
        # the incremental hook was installed by the job too: a new upload is searchable without a rebuild
        before = embedder.images_embedded
        new_ids = client.post(
            f"/api/v1/products/{catalog.product_id}/images",
            data={"kind": "defect", "defect_type_id": str(catalog.scratch_id)},
            files=[("files", ("new.png", png(scratch_photo(81)), "image/png"))],
            headers=admin,
        ).json()["created"]
        assert embedder.images_embedded == before + 1
        engine = client.app.state.models.get(SEARCH)  # type: ignore[attr-defined]
        assert new_ids[0]["id"] in engine.gallery("defect")
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            artifact = session.query(Artifact).filter_by(kind="search_index", is_current=True).one()
            assert artifact.meta["defect_images"] == 8
            assert artifact.version == engine.generation
            # one immutable version in the object storage, with a manifest checksum
            assert artifact.path == f"artifacts/search_index/all/{artifact.version}"
            assert client.app.state.storage.exists(f"{artifact.path}/manifest.json")  # type: ignore[attr-defined]
            assert len(artifact.checksum) == 64


def test_cancelled_build_keeps_the_old_index(
    app_client: TestClient, admin: dict[str, str], search_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_catalog(app_client, admin)
    deploy(app_client, admin)
    services = app_client.app.state.services  # type: ignore[attr-defined]
    old_engine = services.models.get(SEARCH)
    old_generation = old_engine.generation
    with services.session_factory() as session:
        job = DeploymentJob(kind="search_index", status="running", stage="starting")
        session.add(job)
        session.commit()
        job_id = job.id
    ctx = JobContext(
        job_id=job_id,
        kind="search_index",
        product_id=None,
        params={},
        session_factory=services.session_factory,
        services=services,
    )
    listing = search_index.catalog_images

    def list_then_cancel(session: object, product_ids: Sequence[int]) -> list[search_index.CatalogImage]:
        images = listing(session, product_ids)  # type: ignore[arg-type]
        # an admin presses cancel while the job is listing images (what POST .../cancel writes)
        with services.session_factory() as other:
            other.get(DeploymentJob, job_id).is_cancel_requested = True
            other.commit()
        return images

    monkeypatch.setattr(search_index, "catalog_images", list_then_cancel)
    with pytest.raises(JobCancelled):
        search_index.run(ctx)
    assert services.models.get(SEARCH) is old_engine
    with services.session_factory() as session:
        current = session.query(Artifact).filter_by(kind="search_index", is_current=True).one()
        assert current.version == old_generation


def test_changed_embedder_setting_marks_the_index_stale(
    app_client: TestClient, admin: dict[str, str]
) -> None:
    make_catalog(app_client, admin)
    deploy(app_client, admin)
    services = app_client.app.state.services  # type: ignore[attr-defined]
    # No CLIP weights here, so the settings API refuses "clip"; write the choice an admin makes on a
    # server that has them straight into the settings row.
    with services.session_factory() as session:
        catalog_service.get_model_settings(session).embedder = "clip"
        session.commit()
    with services.session_factory() as session:
        states = [s for s in artifact_states(session, services) if s.kind == "search_index"]
    assert states[0].state == "stale"
    assert "search.stale.embedder_changed" in states[0].reasons
    assert states[0].params["configured"] == "clip"


def test_images_changed_behind_the_hook_are_reported_and_fixed_by_a_rebuild(
    app_client: TestClient, admin: dict[str, str]
) -> None:
    catalog = make_catalog(app_client, admin)
    deploy(app_client, admin)
    services = app_client.app.state.services  # type: ignore[attr-defined]
    services.image_hooks.clear()  # e.g. an upload made by another process
    app_client.delete(f"/api/v1/images/{catalog.images['hole'][0]}", headers=admin)
    with services.session_factory() as session:
        state = next(s for s in artifact_states(session, services) if s.kind == "search_index")
    assert state.state == "stale"
    assert state.reasons == ["search.stale.images_changed"]
    assert state.params["removed"] == 1
    deploy(app_client, admin)
    with services.session_factory() as session:
        state = next(s for s in artifact_states(session, services) if s.kind == "search_index")
    assert state.state == "current"
    assert state.detail["defect_images"] == 7


def test_a_lost_image_file_is_skipped_not_fatal(
    app_client: TestClient, admin: dict[str, str], search_settings: Settings
) -> None:
    catalog = make_catalog(app_client, admin)
    lost = catalog.images["scratch"][0]
    services = app_client.app.state.services  # type: ignore[attr-defined]
    with services.session_factory() as session:
        key = session.get(ReferenceImage, lost).object_key
    services.storage.delete(key)  # e.g. removed from the bucket by hand
    job = deploy(app_client, admin)
    assert job["status"] == "succeeded", job
    assert job["result"]["skipped_images"] == [lost]
    assert job["result"]["defect_images"] == 7
    detail = app_client.get(f"/api/v1/deployments/{job['id']}", headers=admin).json()
    assert f"skipped image {lost}" in detail["log"]
    state = next(s for s in _states(app_client) if s.product_id == catalog.product_id)
    assert state.state == "stale"  # the admin sees the catalog and the index disagree
    assert "search.stale.images_changed" in state.reasons


def _states(client: TestClient) -> list:
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.session_factory() as session:
        return [s for s in artifact_states(session, services) if s.kind == "search_index"]


def test_registrations_are_logged_with_vectors_and_the_log_is_trimmed_behind_the_versions(
    app_client: TestClient, admin: dict[str, str]
) -> None:
    services = app_client.app.state.services  # type: ignore[attr-defined]
    catalog = make_catalog(app_client, admin, n=2)
    assert deploy(app_client, admin)["status"] == "succeeded"

    def log_rows() -> list[ChangeLog]:
        with services.session_factory() as session:
            rows = list(session.scalars(select(ChangeLog).order_by(ChangeLog.id)))
            session.expunge_all()
            return rows

    first = upload(
        app_client, admin, catalog.product_id, "defect", [png(scratch_photo(60))], catalog.scratch_id
    )
    (row,) = [r for r in log_rows() if r.entity_id == first[0]]  # the catalog's own uploads are logged too
    assert row.kind == "image.added"
    engine = services.models.get(SEARCH)
    vector = changelog.decode_vector(row.payload["vector"])
    assert vector is not None
    assert np.allclose(vector, engine.gallery("defect").get_vectors(first)[0], atol=1e-6)
    assert deploy(app_client, admin)["status"] == "succeeded"  # its version holds row 1
    second = upload(
        app_client, admin, catalog.product_id, "defect", [png(scratch_photo(61))], catalog.scratch_id
    )
    assert deploy(app_client, admin)["status"] == "succeeded"  # replaces the version that held row 1
    assert [r.entity_id for r in log_rows()] == second  # row 1 is in every version still in use


def test_an_image_registered_for_another_product_during_a_one_product_rebuild_is_kept(
    app_client: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plate = make_catalog(app_client, admin)
    other = make_catalog(app_client, admin, code="bracket")
    assert deploy(app_client, admin)["status"] == "succeeded"
    services = app_client.app.state.services  # type: ignore[attr-defined]
    registered: list[int] = []
    build_identification = search_index.build_identification

    def register_meanwhile(*args: Any, **kwargs: Any) -> Any:
        # The other product's galleries and identification were copied already: a worker registers a new
        # defect image of it now, while the one-product rebuild runs.
        if not registered:
            registered.extend(
                upload(
                    app_client, admin, other.product_id, "defect", [png(scratch_photo(77))], other.scratch_id
                )
            )
        return build_identification(*args, **kwargs)

    monkeypatch.setattr(search_index, "build_identification", register_meanwhile)
    assert deploy(app_client, admin, product_id=plate.product_id)["status"] == "succeeded"
    engine = services.models.get(SEARCH)
    assert registered
    assert registered[0] in engine.gallery("defect")
    assert registered[0] in engine.identification[other.product_id].image_ids
