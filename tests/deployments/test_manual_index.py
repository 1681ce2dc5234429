"""The manual_index deployment: re-index job, restart without re-embedding, artifact states, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.services import Services
from app.db.tables import Artifact, Manual, ManualChunk
from app.deployments import manual_index
from app.inspection.guidance.service import GENERATORS
from app.main import create_app
from app.manuals import indexing
from app.manuals.indexing import MANUALS
from app.ml.errors import JobCancelled
from app.ml.registry import ModelRegistry
from app.ml.retriever import RetrievalQuery
from tests.conftest import make_settings
from tests.manual_library import demo_dataset, install_library


@pytest.fixture
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "demo-manuals"
    demo_dataset(root)
    return root


def _product_with_manual(client: TestClient, headers: dict[str, str], root: Path, index: int = 0) -> int:
    product = demo_dataset(root).products[index]
    pid = int(
        client.post(
            "/api/v1/products", json={"code": product.code, "name": product.name}, headers=headers
        ).json()["id"]
    )
    response = client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("manual.pdf", (root / product.manual_pdf).read_bytes(), "application/pdf")},
        headers=headers,
    )
    assert response.status_code == 201
    return pid


class _CountingEmbedder:
    """Wraps the real embedder and counts texts embedded (to prove a restart embeds nothing)."""

    def __init__(self, inner: indexing.TextEmbedder) -> None:
        self.inner = inner
        self.embedder_id = inner.embedder_id
        self.dim = inner.dim
        self.texts = 0

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts, is_query=is_query)


def test_job_reindexes_every_product_and_states_become_current(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    first = _product_with_manual(client, admin_headers, demo_root, 0)
    second = _product_with_manual(client, admin_headers, demo_root, 1)
    empty = client.post("/api/v1/products", json={"code": "e", "name": "E"}, headers=admin_headers).json()[
        "id"
    ]
    runner = client.app.state.runner  # type: ignore[attr-defined]
    assert runner.wait_idle(120)

    job = client.post(
        "/api/v1/deployments", json={"kind": "manual_index", "product_id": None}, headers=admin_headers
    )
    assert job.status_code == 202, job.text
    assert runner.wait_idle(120)
    done = client.get(f"/api/v1/deployments/{job.json()['id']}", headers=admin_headers).json()
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0
    library = services.models.get(MANUALS)
    assert library.index_for(first) is not None
    assert library.index_for(second) is not None

    with services.session_factory() as session:
        by_product = {s.product_id: s for s in manual_index.states(session, services)}
    assert by_product[first].state == "current"
    assert by_product[first].detail["chunks"] > 10
    assert by_product[empty].state == "missing"
    assert by_product[empty].reasons == ["manual_index.reason.no_manual"]


def test_pending_manual_is_reported_stale(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    runner = client.app.state.runner  # type: ignore[attr-defined]
    pid = _product_with_manual(client, admin_headers, demo_root)
    assert runner.wait_idle(120)
    runner.handlers.pop("manual_index")  # this server can no longer index: the next upload stays pending
    pdf = (demo_root / demo_dataset(demo_root).products[1].manual_pdf).read_bytes()
    client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("late.pdf", pdf, "application/pdf")},
        headers=admin_headers,
    )
    with services.session_factory() as session:
        state = next(s for s in manual_index.states(session, services) if s.product_id == pid)
    assert state.state == "stale"
    assert state.reasons == ["manual_index.reason.manual_not_indexed"]
    assert "late.pdf" in state.params["manuals"]


def test_restart_loads_saved_indexes_without_embedding_and_detects_an_embedder_change(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    library = install_library(services)
    pid = _product_with_manual(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    built = services.models.get(MANUALS).index_for(pid)

    # A fresh process: empty registry, same files on disk.
    counting = _CountingEmbedder(library.embedder)
    fresh = indexing.ManualLibrary(embedder=counting, tokenizer=library.tokenizer)
    loaded = indexing.load_saved_indexes(services, fresh)
    assert counting.texts == 0
    index = loaded.index_for(pid)
    assert index is not None
    assert len(index) == len(built)
    hits = index.retrieve(RetrievalQuery(product_id=pid, defect_code="scratch", defect_name="긁힘"), k=3)
    assert all("긁힘" in h.chunk.section for h in hits)

    class _Other(_CountingEmbedder):
        embedder_id = "hf:another-model"

    other = _Other(library.embedder)
    other.embedder_id = "hf:another-model"
    mismatched = indexing.load_saved_indexes(
        services, indexing.ManualLibrary(embedder=other, tokenizer=library.tokenizer)
    )
    assert mismatched.index_for(pid) is None
    services.models.swap(MANUALS, mismatched)
    with services.session_factory() as session:
        state = next(s for s in manual_index.states(session, services) if s.product_id == pid)
    assert state.state == "stale"
    assert "manual_index.reason.text_embedder_changed" in state.reasons


def test_cancelled_rebuild_leaves_the_live_index_and_rows_unchanged(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    pid = _product_with_manual(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    live = services.models.get(MANUALS)

    def cancel_at_save(fraction: float, stage: str) -> None:
        if stage == "embed":
            raise JobCancelled()

    with services.session_factory() as session:
        before = len(list(session.scalars(select(ManualChunk))))
        with pytest.raises(JobCancelled):
            indexing.rebuild_product(session, services=services, product_id=pid, progress=cancel_at_save)
    assert services.models.get(MANUALS) is live
    with services.session_factory() as session:
        assert len(list(session.scalars(select(ManualChunk)))) == before


def test_startup_load_puts_saved_indexes_in_the_registry(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    pid = _product_with_manual(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]

    restarted = Services(
        settings=services.settings,
        storage=services.storage,
        models=ModelRegistry(services.settings.models_path),
        session_factory=services.session_factory,
        metrics=services.metrics,
    )
    with services.session_factory() as session:  # the server stopped while a second manual was indexing
        manual = session.scalars(select(Manual)).one()
        manual.status = "indexing"
        session.commit()
    manual_index.load(restarted)
    with services.session_factory() as session:
        assert session.scalars(select(Manual)).one().status == "pending"
    library = restarted.models.get(MANUALS)
    assert library.embedder.embedder_id == "use-multilingual-v3"
    assert len(library.index_for(pid)) == len(services.models.get(MANUALS).index_for(pid))
    assert restarted.models.get(GENERATORS) is None  # the application's start-up loads them, not this
    assert "1 products" in restarted.models.status()["engines"]["manuals"]


def test_indexes_are_immutable_versions_that_another_server_fetches(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path, tmp_path: Path
) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    library = install_library(services)
    pid = _product_with_manual(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    with services.session_factory() as session:
        first = session.scalars(select(Artifact).where(Artifact.kind == "manual_index")).one()
        session.expunge(first)
    assert first.path == f"artifacts/manual_index/product-{pid}/{first.version}"
    assert not indexing.product_dir(services, pid).exists()  # no folder rewritten in place
    # A second manual makes a new version; the first one's objects are not rewritten.
    first_objects = {k: services.storage.get(k) for k in services.storage.list(first.path + "/")}
    pdf = (demo_root / demo_dataset(demo_root).products[1].manual_pdf).read_bytes()
    client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("second.pdf", pdf, "application/pdf")},
        headers=admin_headers,
    )
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    with services.session_factory() as session:
        current = session.scalars(
            select(Artifact).where(Artifact.kind == "manual_index", Artifact.is_current.is_(True))
        ).one()
        session.expunge(current)
    assert current.path != first.path
    assert {k: services.storage.get(k) for k in services.storage.list(first.path + "/")} == first_objects
    # Another server (same database and storage, its own empty cache) loads the current version.
    other_settings = make_settings(
        tmp_path / "other",
        database_url=services.settings.database_url,
        local_storage_dir=services.settings.local_storage_path,
    )
    other = Services(
        settings=other_settings,
        storage=services.storage,
        models=ModelRegistry(other_settings.models_path),
        session_factory=services.session_factory,
        metrics=services.metrics,
    )
    fresh = indexing.ManualLibrary(embedder=library.embedder, tokenizer=library.tokenizer)
    loaded = indexing.load_saved_indexes(other, fresh)
    index = loaded.index_for(pid)
    assert index is not None
    assert len(index) == len(services.models.get(MANUALS).index_for(pid))
    assert loaded.checksums[pid] == current.checksum
    assert (other_settings.artifacts_path / "cache" / current.path / ".verified").is_file()


def test_application_start_up_loads_the_generators(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"load_models": True}))) as started:
        generators = started.app.state.models.get(GENERATORS)  # type: ignore[attr-defined]
        assert generators is not None
        assert "extractive" in generators
        assert started.app.state.models.get(MANUALS) is not None  # type: ignore[attr-defined]
