"""A product's manual index written by more than one process (embedded SQLite default): a delete waits for
another process's lease and says so when it must give up, and a rebuild keeps a manual that another process
indexed while the rebuild ran."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.core.config import Settings
from app.db.base import utcnow
from app.db.tables import Lease, Manual
from app.main import create_app
from app.manuals import indexing
from app.manuals.indexing import MANUALS
from tests.conftest import ADMIN_PASSWORD, bearer, make_settings, seed_users
from tests.manual_library import demo_dataset, install_library
from tests.server_process import ROOT, settings_env

# What another process runs: index one manual with its own engines and its own registry.
INDEX_ELSEWHERE = """
import sys
from app.core.config import get_settings
from app.manuals import indexing
from tests.factories import offline_services
with offline_services(get_settings()) as services, services.session_factory() as session:
    indexing.index_manual(session, services=services, manual_id=int(sys.argv[1]))
"""


@pytest.fixture
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "demo-manuals"
    demo_dataset(root)
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The embedded default, with a short job expiry (a dead lease holder is given up on after 1 s)."""
    s = make_settings(tmp_path, job_stale_after_s=1.0, job_heartbeat_s=0.3)
    run_migrations(s)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        seed_users(settings, test_client)
        install_library(test_client.app.state.services)  # type: ignore[attr-defined]
        yield test_client


def _upload(client: TestClient, admin: dict[str, str], product_id: int, name: str, pdf: bytes) -> int:
    created = client.post(
        f"/api/v1/products/{product_id}/manuals",
        files={"file": (name, pdf, "application/pdf")},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def test_a_delete_waits_for_another_process_lease_and_refuses_clearly_if_it_stays(
    client: TestClient, settings: Settings, demo_root: Path
) -> None:
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    pid = client.post("/api/v1/products", json={"code": "p", "name": "판"}, headers=admin).json()["id"]
    pdf = (demo_root / demo_dataset(demo_root).products[0].manual_pdf).read_bytes()
    manual_id = _upload(client, admin, pid, "m.pdf", pdf)
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.app.state.runner.wait_idle(120)  # type: ignore[attr-defined]
    with services.session_factory() as session:  # another server, alive, writes this product's index
        session.merge(
            Lease(
                name=f"manual_index:product-{pid}",
                owner="lease@another-host:4242:abcdef",
                acquired_at=utcnow(),
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
        session.commit()
    refused = client.delete(f"/api/v1/manuals/{manual_id}", headers=admin)
    assert refused.status_code == 409
    assert "다른 서버" in refused.json()["detail"]
    listed = client.get(f"/api/v1/products/{pid}/manuals", headers=admin).json()
    assert [m["id"] for m in listed] == [manual_id]
    assert services.models.get(MANUALS).index_for(pid) is not None  # still searchable

    with services.session_factory() as session:  # that server finished: its lease is free
        lease = session.get(Lease, f"manual_index:product-{pid}")
        assert lease is not None
        lease.owner = ""
        session.commit()
    assert client.delete(f"/api/v1/manuals/{manual_id}", headers=admin).status_code == 204
    assert services.models.get(MANUALS).index_for(pid) is None


def test_a_rebuild_keeps_a_manual_another_process_indexed_while_it_ran(
    client: TestClient, settings: Settings, demo_root: Path
) -> None:
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    manifest = demo_dataset(demo_root)
    first_pdf, late_pdf = ((demo_root / p.manual_pdf).read_bytes() for p in manifest.products[:2])
    pid = client.post("/api/v1/products", json={"code": "p", "name": "판"}, headers=admin).json()["id"]
    first = _upload(client, admin, pid, "first.pdf", first_pdf)
    runner = client.app.state.runner  # type: ignore[attr-defined]
    assert runner.wait_idle(120)
    runner.handlers.pop("manual_index")  # uploads stay pending here: another process indexes the late one
    services = client.app.state.services  # type: ignore[attr-defined]
    late: list[int] = []

    def upload_and_index_elsewhere_meanwhile(fraction: float, stage: str) -> None:
        # The rebuild has read the product's manuals and embedded them; now a manual is uploaded and
        # another process indexes it, before the rebuild records its version.
        if stage == "merge" and not late:
            late.append(_upload(client, admin, pid, "late.pdf", late_pdf))
            done = subprocess.run(
                [sys.executable, "-c", INDEX_ELSEWHERE, str(late[0])],
                cwd=ROOT,
                env=settings_env(settings),
                capture_output=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]

    with services.session_factory() as session:
        counts = indexing.rebuild_product(
            session, services=services, product_id=pid, progress=upload_and_index_elsewhere_meanwhile
        )
    assert counts["manuals"] == 1  # the rebuild itself indexed only the manual it knew
    # Before: the rebuild recorded its version over the other process's, and the late manual, "indexed",
    # was in no index.
    index = services.models.get(MANUALS).index_for(pid)
    assert index is not None
    assert index.manual_ids() == {str(first), str(late[0])}
    listed = client.get(f"/api/v1/products/{pid}/manuals", headers=admin).json()
    assert {m["status"] for m in listed} == {"indexed"}
    with services.session_factory() as session:
        assert session.get(Manual, late[0]) is not None
