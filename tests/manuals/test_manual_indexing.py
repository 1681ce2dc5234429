"""Manual indexing after upload: status transitions, chunk rows, retrieval, delete, unreadable PDFs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.tables import Artifact, DeploymentJob, Manual, ManualChunk
from app.manuals import indexing
from app.manuals.indexing import MANUALS
from app.ml.retriever import RetrievalQuery
from tests.manual_library import demo_dataset, install_library


@pytest.fixture
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "demo-manuals"
    demo_dataset(root)
    return root


def _upload(
    client: TestClient, headers: dict[str, str], root: Path, product_index: int = 0
) -> tuple[int, dict]:
    manifest = demo_dataset(root)
    product = manifest.products[product_index]
    pid = client.post(
        "/api/v1/products", json={"code": product.code, "name": product.name}, headers=headers
    ).json()["id"]
    for dt in product.defect_types:
        client.post(
            f"/api/v1/products/{pid}/defect-types",
            json={"code": dt.code, "name": dt.name, "description": dt.description},
            headers=headers,
        )
    pdf = (root / product.manual_pdf).read_bytes()
    created = client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("manual.pdf", pdf, "application/pdf")},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    return pid, created.json()


def test_upload_is_indexed_in_the_background_and_retrievable(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    pid, body = _upload(client, admin_headers, demo_root)
    assert body["status"] == "pending"
    assert body["index_job_id"] is not None
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]

    listed = client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json()
    assert listed[0]["status"] == "indexed", listed
    assert listed[0]["indexed_at"] is not None
    assert listed[0]["chunk_count"] > 10
    job = client.get(f"/api/v1/deployments/{body['index_job_id']}", headers=admin_headers).json()
    assert job["status"] == "succeeded"

    with services.session_factory() as session:
        chunks = list(session.scalars(select(ManualChunk).where(ManualChunk.manual_id == body["id"])))
        assert len(chunks) == listed[0]["chunk_count"]
        assert all(c.page >= 1 for c in chunks)
        assert any("긁힘" in c.section and "발생 원인" in c.section for c in chunks)
        artifact = session.scalar(
            select(Artifact).where(Artifact.kind == "manual_index", Artifact.is_current)
        )
        assert artifact is not None
        assert artifact.meta["manual_ids"] == [body["id"]]

    index = services.models.get(MANUALS).index_for(pid)
    sections = index.retrieve_sections(RetrievalQuery(product_id=pid, defect_code="dent", defect_name="찍힘"))
    assert sections["cause"], sections
    assert all("찍힘" in hit.chunk.section for hit in sections["cause"] + sections["action"])
    stored = list(services.storage.list(f"artifacts/manual_index/product-{pid}/"))  # one stored version
    assert any(key.endswith("/manual_index.json") for key in stored)


def test_delete_removes_chunks_and_index_entries(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    pid, body = _upload(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    assert services.models.get(MANUALS).index_for(pid) is not None

    assert client.delete(f"/api/v1/manuals/{body['id']}", headers=admin_headers).status_code == 204
    with services.session_factory() as session:
        assert session.scalars(select(ManualChunk)).first() is None
    assert services.models.get(MANUALS).index_for(pid) is None
    assert not (Path(services.settings.manual_store_path) / f"product_{pid}").exists()
    assert client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json() == []


def test_a_second_manual_is_added_beside_the_first_and_readers_keep_their_index(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    pid, _ = _upload(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    before = services.models.get(MANUALS).index_for(pid)
    size_before = len(before)
    pdf = (demo_root / demo_dataset(demo_root).products[1].manual_pdf).read_bytes()
    client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("second.pdf", pdf, "application/pdf")},
        headers=admin_headers,
    )
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    after = services.models.get(MANUALS).index_for(pid)
    assert len(before) == size_before  # the index a request held was not mutated
    assert len(after.manual_ids()) == 2
    assert len(after) > size_before


def test_unreadable_stored_pdf_marks_the_manual_failed(
    client: TestClient, admin_headers: dict[str, str], demo_root: Path
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    install_library(services)
    pid, body = _upload(client, admin_headers, demo_root)
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    with services.session_factory() as session:
        manual = session.get(Manual, body["id"])
        services.storage.put(manual.object_key, b"%PDF-1.4 broken", "application/pdf")
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the parser raises, the row records it
            indexing.index_manual(session, services=services, manual_id=body["id"])
    listed = client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json()
    assert listed[0]["status"] == "failed"
    assert listed[0]["error"]
    with services.session_factory() as session:
        assert session.scalar(select(DeploymentJob).where(DeploymentJob.status == "failed")) is None

    # The admin fixes the stored file and asks for indexing again.
    pdf = (demo_root / demo_dataset(demo_root).products[0].manual_pdf).read_bytes()
    services.storage.put(manual.object_key, pdf, "application/pdf")
    again = client.post(f"/api/v1/manuals/{body['id']}/reindex", headers=admin_headers)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    listed = client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json()
    assert listed[0]["status"] == "indexed"
    assert listed[0]["error"] == ""
    assert listed[0]["chunk_count"] > 10
    assert client.post("/api/v1/manuals/999/reindex", headers=admin_headers).status_code == 404
