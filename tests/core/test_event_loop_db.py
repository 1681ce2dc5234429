"""No request touches the database on the server's event loop.

An `async` endpoint that runs a query on the loop blocks every request of the process while it waits for a
pooled connection, and the requests holding the connections cannot hand them back (their sessions close in
the threadpool the loop schedules): with 32 line workers at once the server stalled for the pool's 30 s and
answered 500 to every upload (docs/benchmarks/throughput.md, "32 workers"). The uploads are the async
endpoints (they stream the body first); everything they do with the database has to run in the threadpool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.demo.generator import generate_demo_dataset
from tests.factories import png_bytes


@pytest.fixture
def on_loop(client: TestClient) -> Iterator[list[str]]:
    """SQL statements the app ran on a thread with a running event loop."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a threadpool worker: fine
        seen.append(statement.split("\n")[0][:120])

    engine = client.app.state.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_uploads_run_their_database_work_off_the_event_loop(
    client: TestClient,
    admin_headers: dict[str, str],
    worker_headers: dict[str, str],
    on_loop: list[str],
    tmp_path: Path,
) -> None:
    pid = client.post("/api/v1/products", json={"code": "p", "name": "P"}, headers=admin_headers).json()["id"]
    images = client.post(
        f"/api/v1/products/{pid}/images",
        data={"kind": "normal"},
        files=[("files", (f"n{i}.png", png_bytes(), "image/png")) for i in (1, 2)],
        headers=admin_headers,
    )
    assert images.status_code == 201, images.text
    single = client.post(
        "/api/v1/inspections",
        files={"file": ("part.png", png_bytes((80, 60)), "image/png")},
        data={"product_id": str(pid)},
        headers=worker_headers,
    )
    assert single.status_code == 201, single.text
    views = client.post(
        "/api/v1/inspections",
        files=[("files", (f"{view}.png", png_bytes(), "image/png")) for view in ("top", "side")],
        data={"views": "top,side", "product_id": str(pid)},
        headers=worker_headers,
    )
    assert views.status_code == 201, views.text
    assert [v["view"] for v in views.json()["views"]] == ["top", "side"]
    manifest = generate_demo_dataset(
        tmp_path / "d", seed=0, size=64, normals_per_product=1, defects_per_type=1
    )
    pdf = (tmp_path / "d" / manifest.products[0].manual_pdf).read_bytes()
    manual = client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("manual.pdf", pdf, "application/pdf")},
        headers=admin_headers,
    )
    assert manual.status_code == 201, manual.text
    assert manual.json()["index_job_id"]
    assert on_loop == []
