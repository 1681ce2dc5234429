"""Manual indexing by several `defectlens serve` processes on one MariaDB and one SeaweedFS (S3): two servers
indexing manuals of the same product at the same moment both end up in the product's index, and a starting
server leaves alone a manual that a live server is indexing while it resets one whose indexer died.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.db.tables import Artifact, DeploymentJob, Manual
from app.manuals import indexing
from app.ml.retriever import RetrievalQuery
from tests.conftest import ADMIN_PASSWORD
from tests.factories import make_users, mariadb_s3_settings, offline_services, open_session
from tests.manual_library import demo_dataset, install_library
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.mariadb, pytest.mark.s3, pytest.mark.slow]

# A job heartbeat this old means its process is gone; longer than a server takes to start here.
STALE_AFTER_S = "300"


@pytest.fixture
def shared(tmp_path: Path, s3_server: dict[str, str]) -> Iterator[Settings]:
    """One migrated MariaDB database and one S3 bucket for every process of the test, users seeded."""
    for settings in mariadb_s3_settings(tmp_path / "shared", s3_server, bucket_prefix="manual-lease"):
        with open_session(settings) as session:
            make_users(session, settings, usernames=("admin1",))
        yield settings


@pytest.fixture
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "demo-manuals"
    demo_dataset(root)
    return root


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test starts; all stopped at its end (continued first if the test left one stopped)."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def _start(
    servers: list[ServerProcess], shared: Settings, tmp_path: Path, name: str, *, load_models: bool = False
) -> ServerProcess:
    """A server with its own data, models and cache folders (only the database and the storage are shared)."""
    own = shared.model_copy(
        update={
            "data_dir": tmp_path / name / "data",
            "models_dir": tmp_path / name / "models",
            "manual_store_dir": tmp_path / name / "manual_store",
            "load_models": load_models,
        }
    )
    server = ServerProcess(own, tmp_path / f"server-{name}.log", JOB_STALE_AFTER_S=STALE_AFTER_S)
    servers.append(server)
    return server


def _admin(client: httpx.Client) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": "admin1", "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _product(client: httpx.Client, admin: dict[str, str], code: str) -> int:
    response = client.post("/api/v1/products", json={"code": code, "name": code}, headers=admin)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _upload(client: httpx.Client, admin: dict[str, str], product_id: int, name: str, pdf: bytes) -> int:
    response = client.post(
        f"/api/v1/products/{product_id}/manuals",
        files={"file": (name, pdf, "application/pdf")},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _status(settings: Settings, manual_id: int) -> str:
    with open_session(settings) as session:
        manual = session.get(Manual, manual_id)
        assert manual is not None
        return manual.status


def _until(check: Callable[[], Any], what: str, servers: list[ServerProcess], timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = check()
        if outcome:
            return outcome
        time.sleep(0.02)
    tails = "\n".join(f"--- {s.url}\n{s.tail(3000)}" for s in servers)
    raise AssertionError(f"{what}: not within {timeout} s\n{tails}")


def _stored_index(settings: Settings, tmp_path: Path, product_id: int) -> indexing.ManualIndex:
    """The product's current index as yet another server would load it (its own empty cache)."""
    reader = settings.model_copy(update={"models_dir": tmp_path / "reader" / "models"})
    with offline_services(reader) as services:
        library = indexing.load_saved_indexes(services, install_library(services))
    index = library.index_for(product_id)
    assert index is not None
    return index


def test_two_servers_indexing_one_product_at_once_keep_both_manuals(
    shared: Settings, demo_root: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    manifest = demo_dataset(demo_root)
    metal, fabric = manifest.products[0], manifest.products[1]
    metal_pdf, fabric_pdf = ((demo_root / p.manual_pdf).read_bytes() for p in (metal, fabric))
    a, b = _start(servers, shared, tmp_path, "a"), _start(servers, shared, tmp_path, "b")
    for server in (a, b):
        server.wait_ready()
    with a.client() as on_a, b.client() as on_b:
        admin = _admin(on_a)
        # Each server indexes once first (its text engines load then), so that the two uploads below are
        # indexed side by side rather than one behind the other's engine loading.
        for client, code in ((on_a, "warm_a"), (on_b, "warm_b")):
            warm = _upload(client, admin, _product(client, admin, code), "warm.pdf", metal_pdf)
            _until(lambda warm=warm: _status(shared, warm) == "indexed", "warm-up indexing", servers)

        product_id = _product(on_a, admin, "shared_line")
        with ThreadPoolExecutor(2) as pool:
            uploads = [
                pool.submit(_upload, on_a, admin, product_id, "metal.pdf", metal_pdf),
                pool.submit(_upload, on_b, admin, product_id, "fabric.pdf", fabric_pdf),
            ]
            on_a_id, on_b_id = (u.result() for u in uploads)

        def both_done() -> bool:
            return {_status(shared, m) for m in (on_a_id, on_b_id)} <= {"indexed", "failed"}

        _until(both_done, "both manuals indexed", servers)
        listed = on_b.get(f"/api/v1/products/{product_id}/manuals", headers=admin).json()
        assert sorted(m["status"] for m in listed) == ["indexed", "indexed"]

    with open_session(shared) as session:
        current = session.scalars(
            select(Artifact).where(
                Artifact.kind == "manual_index",
                Artifact.product_id == product_id,
                Artifact.is_current.is_(True),
            )
        ).one()
    # Before the lease, the later of the two records was built from the version both had read: it held
    # only its own manual, and the other manual, though "indexed", was found by no search.
    assert current.meta["manual_ids"] == sorted([on_a_id, on_b_id])
    index = _stored_index(shared, tmp_path, product_id)
    assert index.manual_ids() == {str(on_a_id), str(on_b_id)}
    for product, manual_id in ((metal, on_a_id), (fabric, on_b_id)):
        only_here = next(s for s in product.manual_sections if s.defect_code in ("crack", "snag"))
        hits = index.retrieve(RetrievalQuery(product_id=product_id, text=only_here.title), k=3)
        assert hits
        assert str(hits[0].chunk.manual_id) == str(manual_id)


def _wait_indexing(settings: Settings, manual_id: int, servers: list[ServerProcess]) -> None:
    _until(lambda: _status(settings, manual_id) != "pending", "indexing started", servers, timeout=120)
    assert _status(settings, manual_id) == "indexing", "the indexing ended before the test could hold it"


def test_a_starting_server_resets_only_manuals_whose_indexer_died(
    shared: Settings, demo_root: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    manifest = demo_dataset(demo_root)
    pdf = (demo_root / manifest.products[0].manual_pdf).read_bytes()
    live, doomed = _start(servers, shared, tmp_path, "live"), _start(servers, shared, tmp_path, "doomed")
    for server in (live, doomed):
        server.wait_ready()
    with live.client() as on_live, doomed.client() as on_doomed:
        admin = _admin(on_live)
        kept_id = _upload(on_live, admin, _product(on_live, admin, "kept"), "kept.pdf", pdf)
        lost_id = _upload(on_doomed, admin, _product(on_doomed, admin, "lost"), "lost.pdf", pdf)
        # Frozen mid-indexing (alive, just not running for a while), and killed mid-indexing.
        _wait_indexing(shared, kept_id, servers)
        os.kill(live.proc.pid, signal.SIGSTOP)
        _wait_indexing(shared, lost_id, servers)
        doomed.proc.kill()
        doomed.proc.wait(10)

    starting = _start(servers, shared, tmp_path, "starting", load_models=True)
    starting.wait_ready()
    # Before: the start reset every "indexing" manual, the live server's too.
    assert _status(shared, kept_id) == "indexing"
    assert _status(shared, lost_id) == "pending"
    with open_session(shared) as session:
        jobs = {
            job.params["manual_id"]: job
            for job in session.scalars(select(DeploymentJob).where(DeploymentJob.kind == "manual_index"))
        }
    assert jobs[kept_id].status == "running"
    assert jobs[lost_id].status == "failed"

    os.kill(live.proc.pid, signal.SIGCONT)
    _until(lambda: _status(shared, kept_id) == "indexed", "the live server's manual indexed", servers)
    with starting.client() as on_starting:
        admin = _admin(on_starting)
        again = on_starting.post(f"/api/v1/manuals/{lost_id}/reindex", headers=admin)
        assert again.status_code == 202, again.text
        _until(lambda: _status(shared, lost_id) == "indexed", "the dead server's manual re-indexed", servers)
