"""Manuals are read outside the request, in a process with CPU, wall-time, memory and decoded-byte limits:
a 4 KB PDF whose pages share one huge content stream ends `failed` with a clear reason while the server
keeps answering; a DOCX ZIP bomb is refused at upload; a manual without text fails, one without defect
sections is flagged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import run_migrations
from app.main import create_app
from app.manuals.document import Limits, ManualFileError
from app.manuals.parse_worker import ProcessLimits, parse_bounded
from bench.manual_corpus import Line, render_docx, render_pdf
from tests.conftest import bearer, make_settings, seed_users
from tests.manual_library import install_library
from tests.manuals.hostile import docx_zip_bomb, shared_stream_pdf


@pytest.fixture
def limited_client(tmp_path: Path) -> Iterator[TestClient]:
    """The app with a 2-second CPU limit on manual parsing (production default: 30 s)."""
    settings = make_settings(tmp_path / "app", manual_parse_cpu_s=2, manual_parse_wall_s=30)
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        install_library(client.app.state.services)  # type: ignore[attr-defined]
        yield client


def _product(client: TestClient, headers: dict[str, str]) -> int:
    return int(client.post("/api/v1/products", json={"code": "p", "name": "P"}, headers=headers).json()["id"])


def _listed(client: TestClient, pid: int, headers: dict[str, str]) -> dict:
    return client.get(f"/api/v1/products/{pid}/manuals", headers=headers).json()[0]


def test_shared_stream_pdf_fails_with_a_reason_and_the_server_stays_responsive(
    limited_client: TestClient,
) -> None:
    client = limited_client
    from tests.conftest import ADMIN_PASSWORD

    headers = bearer(client, "admin1", ADMIN_PASSWORD)
    pid = _product(client, headers)
    bomb = shared_stream_pdf(pages=10, decoded_bytes=1_000_000)
    assert len(bomb) < 6000

    created = client.post(
        f"/api/v1/products/{pid}/manuals", files={"file": ("m.pdf", bomb, "application/pdf")}, headers=headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"  # the upload does not parse the pages

    # While the job's child process burns its CPU budget, the server keeps answering: listings come back
    # while the manual is still being parsed (no wall-clock bound here: this machine's load would decide it).
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = client.get(f"/api/v1/products/{pid}/manuals", headers=headers)
        assert listed.status_code == 200
        seen.append(listed.json()[0]["status"])
        if seen[-1] not in ("pending", "indexing"):
            break
        time.sleep(0.05)
    assert "indexing" in seen, seen  # answered during the parse, not only after it

    assert client.app.state.runner.wait_idle(60)  # type: ignore[attr-defined]
    manual = _listed(client, pid, headers)
    assert manual["status"] == "failed"
    assert "처리량" in manual["error"], manual["error"]  # translated: exceeded the allowed processing
    english = client.get(
        f"/api/v1/products/{pid}/manuals", headers={**headers, "Accept-Language": "en"}
    ).json()
    assert "exceeded the allowed processing" in english[0]["error"]


def test_decoded_byte_budget_wall_time_and_memory_limit_stop_the_parse() -> None:
    bomb = shared_stream_pdf(pages=10, decoded_bytes=1_000_000)
    started = time.perf_counter()
    with pytest.raises(ManualFileError) as budget:
        parse_bounded(bomb, Limits(max_decoded_bytes=4_000_000), ProcessLimits())
    assert budget.value.code == "too_complex"
    assert time.perf_counter() - started < 15.0  # the byte budget stopped it, not the 30 s CPU limit
    with pytest.raises(ManualFileError) as wall:
        parse_bounded(bomb, Limits(max_decoded_bytes=10**9), ProcessLimits(cpu_s=60, wall_s=1.0))
    assert wall.value.code == "timeout"
    # One page of 60 MB decoded operators, within the byte budget: the memory limit stops it.
    big = shared_stream_pdf(pages=1, decoded_bytes=60_000_000)
    started = time.perf_counter()
    with pytest.raises(ManualFileError) as memory:
        parse_bounded(big, Limits(), ProcessLimits(memory_bytes=150 * 2**20))
    assert memory.value.code == "too_complex"
    assert time.perf_counter() - started < 25.0  # the memory limit stopped it, not the 30 s CPU limit


def test_docx_zip_bomb_is_refused_at_upload_and_nothing_is_stored(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    pid = _product(client, admin_headers)
    response = client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("manual.docx", docx_zip_bomb(), "application/octet-stream")},
        headers=admin_headers,
    )
    assert response.status_code == 413
    assert "DOCX" in response.json()["detail"]
    assert client.get(f"/api/v1/products/{pid}/manuals", headers=admin_headers).json() == []
    assert list(client.app.state.storage.list("manuals/")) == []  # type: ignore[attr-defined]


def test_manual_without_text_fails_and_one_without_defect_sections_is_flagged(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    install_library(client.app.state.services)  # type: ignore[attr-defined]
    pid = _product(client, admin_headers)
    blank = render_pdf([Line(" ")], header="", footer=" ")
    client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("blank.pdf", blank, "application/pdf")},
        headers=admin_headers,
    )
    assert client.app.state.runner.wait_idle(60)  # type: ignore[attr-defined]
    manual = _listed(client, pid, admin_headers)
    assert manual["status"] == "failed"
    assert "텍스트를 추출할 수 없습니다" in manual["error"]

    memo = render_docx([Line("공지", level=1), Line("다음 주 월요일은 설비 정기 점검으로 라인을 세운다.")])
    created = client.post(
        f"/api/v1/products/{pid}/manuals",
        files={"file": ("memo.docx", memo, "application/octet-stream")},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["file_name"] == "memo.docx"
    assert client.app.state.runner.wait_idle(60)  # type: ignore[attr-defined]
    manual = _listed(client, pid, admin_headers)
    assert manual["status"] == "indexed"
    assert "불량 항목" in manual["error"]  # flagged: no defect section was found
    structure = client.get(f"/api/v1/manuals/{manual['id']}/structure", headers=admin_headers).json()
    assert structure["sections"] == []
    assert structure["warnings"][0]["code"] == "no_sections"
