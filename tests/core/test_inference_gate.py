"""Bounded parsing and inference (issue 14, item 5): large photos are decoded reduced, a pixel cap holds,
and beyond the inference queue's capacity callers get 503 with Retry-After (depth and wait in /metrics)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.cli import run_migrations
from app.core.config import Settings
from app.core.errors import ServiceUnavailableError
from app.core.images import open_rgb
from app.core.inference import InferenceGates
from tests.conftest import WORKER_PASSWORD, make_settings, png_bytes
from tests.live import live_app


def _jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(7)
    small = rng.integers(0, 255, (height // 50, width // 50, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_large_photos_are_decoded_at_the_working_size(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _jpeg(6000, 4000)
    decoded: list[tuple[int, int]] = []
    real_load = Image.Image.load

    def recording_load(self: Image.Image) -> object:
        result = real_load(self)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(Image.Image, "load", recording_load)
    full = open_rgb(data, max_side=None)
    assert full.size == (6000, 4000)
    decoded.clear()
    reduced = open_rgb(data, max_side=2048)
    assert max(reduced.size) <= 2048
    assert min(reduced.size) >= 1000
    # The JPEG decoder itself worked at reduced scale: no 24-megapixel buffer was ever decoded.
    assert decoded
    assert max(w * h for w, h in decoded) <= 3000 * 2000
    big_png = io.BytesIO()
    Image.new("RGB", (4000, 3000), (80, 90, 100)).save(big_png, format="PNG")
    assert max(open_rgb(big_png.getvalue(), max_side=1024).size) <= 1024


def test_a_tiny_file_with_huge_dimensions_is_refused(client: object, worker_headers: dict[str, str]) -> None:
    buffer = io.BytesIO()
    Image.new("L", (6300, 6300), 0).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 200_000
    response = client.post(  # type: ignore[attr-defined]
        "/api/v1/inspections",
        headers=worker_headers,
        files={"file": ("tiny.png", buffer.getvalue(), "image/png")},
    )
    # Before: accepted (40 MP cap), then search took 7.7 s and the anomaly step 6.7 s.
    assert response.status_code == 413
    assert "해상도" in response.json()["detail"]


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _settings(tmp_path: Path) -> Settings:
    settings = make_settings(
        tmp_path, inference_concurrency=1, inference_queue_size=1, inference_queue_wait_s=10
    )
    run_migrations(settings)
    return settings


def test_beyond_capacity_callers_get_503_with_retry_after(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with live_app(settings) as (base, app):
        body = {"username": "worker1", "password": WORKER_PASSWORD}
        token = httpx.post(f"{base}/api/v1/auth/login", json=body).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        inspection = httpx.post(
            f"{base}/api/v1/inspections", headers=headers, files={"file": ("a.png", png_bytes(), "image/png")}
        ).json()
        gate = app.state.services.inference  # type: ignore[attr-defined]
        release = threading.Event()
        holding = threading.Event()

        def hold() -> None:
            with gate.slot("search"):
                holding.set()
                release.wait(20)

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(5)
        queued: list[httpx.Response] = []
        url = f"{base}/api/v1/inspections/{inspection['id']}/search"
        waiter = threading.Thread(
            target=lambda: queued.append(httpx.post(url, json={}, headers=headers, timeout=30))
        )
        waiter.start()
        deadline = time.monotonic() + 5
        while _metric(httpx.get(f"{base}/metrics").text, "defectlens_inference_queue_depth") < 1:
            assert time.monotonic() < deadline, "the queued search never showed in /metrics"
            time.sleep(0.05)
        # One running, one waiting: the next caller is refused at once.
        started = time.perf_counter()
        refused = httpx.post(url, json={}, headers=headers, timeout=30)
        assert time.perf_counter() - started < 5  # refused at once, not after the queue's 10 s wait
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert "초 후" in refused.json()["detail"]
        objects_before = sorted(p for p in settings.local_storage_path.rglob("*") if p.is_file())
        analyze = httpx.post(
            f"{base}/api/v1/analyze", headers=headers, files={"file": ("b.png", png_bytes(), "image/png")}
        )
        assert analyze.status_code == 503
        assert sorted(p for p in settings.local_storage_path.rglob("*") if p.is_file()) == objects_before
        release.set()
        holder.join(10)
        waiter.join(30)
        assert queued[0].status_code != 503  # the queued caller was served once the slot freed up
        metrics = httpx.get(f"{base}/metrics").text
        assert _metric(metrics, "defectlens_inference_refused_total") >= 2
        assert _metric(metrics, 'defectlens_inference_queue_wait_seconds_count{step="search"}') >= 1


def test_queued_steps_hold_no_database_connection(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, inference_concurrency=1, inference_queue_size=30, inference_queue_wait_s=30
    )
    run_migrations(settings)
    with live_app(settings) as (base, app):
        body = {"username": "worker1", "password": WORKER_PASSWORD}
        token = httpx.post(f"{base}/api/v1/auth/login", json=body).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        inspection = httpx.post(
            f"{base}/api/v1/inspections", headers=headers, files={"file": ("a.png", png_bytes(), "image/png")}
        ).json()
        gate = app.state.services.inference  # type: ignore[attr-defined]
        engine = app.state.engine  # type: ignore[attr-defined]
        release = threading.Event()
        holding = threading.Event()

        def hold() -> None:
            with gate.slot("search"):
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(5)
        answers: list[int] = []
        url = f"{base}/api/v1/inspections/{inspection['id']}/search"
        callers = [
            threading.Thread(
                target=lambda: answers.append(
                    httpx.post(url, json={}, headers=headers, timeout=60).status_code
                )
            )
            for _ in range(20)
        ]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 20
        while _metric(httpx.get(f"{base}/metrics").text, "defectlens_inference_queue_depth") < 20:
            assert time.monotonic() < deadline, "not every caller reached the queue"
            time.sleep(0.1)
        # Before: each queued request kept its pooled connection; past the pool size (15 on SQLite)
        # callers waited for a connection instead, and timed out with 500 after 30 s.
        assert engine.pool.checkedout() <= 2
        release.set()
        holder.join(10)
        for caller in callers:
            caller.join(60)
        assert 500 not in answers
        assert 503 not in answers
        assert len(answers) == 20


def test_each_step_has_its_own_gate_so_a_search_never_waits_behind_anomaly_checks(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        inference_concurrency=1,
        inference_anomaly_concurrency=2,
        inference_queue_size=0,
        inference_queue_wait_s=5,
    )
    gates = InferenceGates.from_settings(settings)
    assert (gates.gate("search").concurrency, gates.gate("anomaly").concurrency) == (1, 2)
    # Every running and waiting place has a server thread, plus room for uploads and pages.
    assert gates.thread_pool_size() == 3 + 40
    with gates.slot("anomaly"), gates.slot("anomaly"):
        # Both anomaly places taken: the next anomaly check is refused at once, /analyze too...
        with pytest.raises(ServiceUnavailableError), gates.slot("anomaly"):
            pass
        with pytest.raises(ServiceUnavailableError):
            gates.admit("analyze")
        # ...while a search runs at once (before: one shared gate, it queued behind the checks).
        gates.admit("search")
        with gates.slot("search"):
            pass
