"""The deploy screens: per-product artifact state, start a job from the page, watch it, cancel it, read
its log; admins only."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from functools import partial

from fastapi.testclient import TestClient

from app.core.artifacts import ArtifactState
from app.core.i18n import LANGUAGES, translate
from app.core.jobs import JobContext
from app.core.templating import templates
from app.db.tables import Artifact, DeploymentJob
from app.deployments import service as deploy_service
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD
from tests.factories import make_catalog


def login_page(client: TestClient, username: str, password: str) -> None:
    """Log in through the login form (session cookie + CSRF cookie, as a browser does)."""
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    response = client.post(
        "/login",
        data={"username": username, "password": password, "next": "/", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303


def csrf(client: TestClient) -> str:
    """The CSRF token the pages put in their forms."""
    return str(client.cookies.get("dl_csrf"))


def _wait_status(client: TestClient, job_id: int, statuses: set[str], timeout: float = 20) -> DeploymentJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            job = session.get(DeploymentJob, job_id)
            assert job is not None
            if job.status in statuses:
                session.expunge(job)
                return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def test_deploy_pages_are_for_admins_only(client: TestClient) -> None:
    assert client.get("/admin/deploy/search", follow_redirects=False).status_code == 303  # to the login
    login_page(client, "worker1", WORKER_PASSWORD)
    for url in (
        "/admin/deploy/search",
        "/admin/deploy/anomaly",
        "/admin/deploy/manuals",
        "/admin/deploy/jobs",
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "관리자만 사용할 수 있는 기능입니다." in response.text
    response = client.post("/admin/deploy/search/start", data={"csrf_token": csrf(client)})
    assert response.status_code == 403


def test_unavailable_kind_is_shown_not_failed(client: TestClient) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        make_catalog(session)
    login_page(client, "admin1", ADMIN_PASSWORD)
    client.app.state.runner.handlers.pop("anomaly_model", None)  # type: ignore[attr-defined]
    page = client.get("/admin/deploy/anomaly")
    assert page.status_code == 200
    assert "PatchCore 메모리뱅크 생성" in page.text
    assert "이 서버에는 이 배포 작업이 아직 설치되어 있지 않습니다" in page.text
    assert re.search(r'<button type="submit" class="primary"\s+disabled', page.text)
    assert "금속 판" in page.text
    assert "직물" in page.text
    assert "작업자는 기존 인덱스·메모리뱅크로 검사를 계속할 수 있습니다" in page.text
    # starting anyway (a stale form) says why, in the page, with a 409
    refused = client.post("/admin/deploy/anomaly/start", data={"csrf_token": csrf(client), "product_id": ""})
    assert refused.status_code == 409
    assert "이 서버에서 실행할 수 없는 작업 종류입니다" in refused.text
    english = client.get("/admin/deploy/anomaly?lang=en")
    assert "not installed on this server yet" in english.text
    assert "Workers keep inspecting" in english.text
    assert client.get("/admin/deploy/nope").status_code == 404


def test_start_watch_and_log_a_job_from_the_page(client: TestClient) -> None:
    """A tiny real job handler (this tests the page, not an engine) reports stages and finishes."""
    release = threading.Event()

    def handler(ctx: JobContext) -> dict[str, int]:
        ctx.progress(0.25, "embedding 1/4")
        ctx.log("embedded the first batch")
        assert release.wait(10)
        ctx.progress(0.75, "writing index")
        return {"images": 4}

    client.app.state.runner.register("search_index", handler)  # type: ignore[attr-defined]
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        cat = make_catalog(session)
    metal = cat.products["metal_plate"]
    login_page(client, "admin1", ADMIN_PASSWORD)
    started = client.post(
        "/admin/deploy/search/start",
        data={"csrf_token": csrf(client), "product_id": str(metal)},
        follow_redirects=False,
    )
    assert started.status_code == 303
    job_id = int(started.headers["location"].rsplit("=", 1)[1])
    assert started.headers["location"] == f"/admin/deploy/search?job={job_id}"
    deadline = time.monotonic() + 10
    while "embedding 1/4" not in (page := client.get(started.headers["location"])).text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert f'data-job-id="{job_id}"' in page.text
    assert 'data-status="running"' in page.text
    assert "25%" in page.text
    assert "작업 취소" in page.text
    # the same scope cannot be started twice; the page says which job runs
    again = client.post(
        "/admin/deploy/search/start", data={"csrf_token": csrf(client), "product_id": str(metal)}
    )
    assert again.status_code == 409
    assert f"작업 #{job_id}" in again.text
    # the API gives elapsed time for the live panel
    api = client.get(f"/api/v1/deployments/{job_id}").json()
    assert api["elapsed_s"] is not None
    assert api["eta_s"] is not None
    assert api["eta_s"] >= 0
    release.set()
    _wait_status(client, job_id, {"succeeded"})
    detail = client.get(f"/admin/deploy/jobs/{job_id}")
    assert detail.status_code == 200
    assert "embedded the first batch" in detail.text
    assert "&#34;images&#34;: 4" in detail.text or '"images": 4' in detail.text
    assert "완료" in detail.text
    history = client.get("/admin/deploy/search")
    assert f"/admin/deploy/jobs/{job_id}" in history.text
    assert "images=4" in history.text
    assert "금속 판" in history.text


def test_cancel_from_the_page(client: TestClient) -> None:
    """A tiny real job handler that works until it is cancelled."""

    def handler(ctx: JobContext) -> None:
        for i in range(400):
            ctx.progress(i / 400, "working")
            time.sleep(0.05)

    client.app.state.runner.register("manual_index", handler)  # type: ignore[attr-defined]
    login_page(client, "admin1", ADMIN_PASSWORD)
    started = client.post(
        "/admin/deploy/manuals/start", data={"csrf_token": csrf(client)}, follow_redirects=False
    )
    job_id = int(started.headers["location"].rsplit("=", 1)[1])
    _wait_status(client, job_id, {"running"})
    cancelled = client.post(
        f"/admin/deploy/jobs/{job_id}/cancel", data={"csrf_token": csrf(client)}, follow_redirects=False
    )
    assert cancelled.status_code == 303
    job = _wait_status(client, job_id, {"cancelled"})
    assert job.finished_at is not None
    page = client.get(f"/admin/deploy/jobs/{job_id}")
    assert "취소됨" in page.text
    assert "cancelled by an admin" in page.text
    # cancelling a finished job is a clear 409 on the page
    again = client.post(f"/admin/deploy/jobs/{job_id}/cancel", data={"csrf_token": csrf(client)})
    assert again.status_code == 409
    assert "이미 끝난 작업은 취소할 수 없습니다" in again.text


def test_job_history_pages_and_filters_by_kind(client: TestClient) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        for i in range(13):
            session.add(
                DeploymentJob(
                    kind="search_index" if i % 2 else "anomaly_model",
                    status="succeeded" if i % 3 else "failed",
                    error="" if i % 3 else f"RuntimeError: broken {i}",
                    progress=1.0,
                    stage="done",
                    started_at=now,
                    finished_at=now,
                )
            )
        session.commit()
    login_page(client, "admin1", ADMIN_PASSWORD)
    everything = client.get("/admin/deploy/jobs")
    assert "1 / 2 페이지 (총 13건)" in everything.text
    anomaly = client.get("/admin/deploy/jobs?kind=anomaly_model")
    assert "총 7건" not in anomaly.text  # one page only: no pager
    assert anomaly.text.count("/admin/deploy/jobs/") == 7 * 1 + 0
    assert "RuntimeError: broken 0" in anomaly.text
    assert client.get("/admin/deploy/jobs?kind=bogus").status_code == 400
    second = client.get("/admin/deploy/search?page=2")
    assert second.status_code == 200
    assert "← 이전" in client.get("/admin/deploy/jobs?page=2").text


def test_job_summaries_are_translated_on_the_page(client: TestClient) -> None:
    """Issue 15: a finished job's outcome read "built=..., failed=..." (English keys on the Korean page)."""
    results = {
        "search_index": {"defect_images": 12, "normal_images": 30, "products": 2, "skipped_images": [7]},
        "anomaly_model": {"built": [{"product_id": 1}, {"product_id": 2}], "failed": {"3": "no images"}},
        "manual_index": {"products": 1, "manuals": 2, "failed": 0, "chunks": 40},
    }
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        for kind, result in results.items():
            session.add(
                DeploymentJob(
                    kind=kind,
                    status="succeeded",
                    progress=1.0,
                    stage="done",
                    result=result,
                    started_at=now,
                    finished_at=now,
                )
            )
        session.commit()
    login_page(client, "admin1", ADMIN_PASSWORD)
    korean = client.get("/admin/deploy/jobs").text
    english = client.get("/admin/deploy/jobs", params={"lang": "en"}).text
    ko_summaries = re.findall(r"<span data-job-summary>(.*?)</span>", korean)
    en_summaries = re.findall(r"<span data-job-summary>(.*?)</span>", english)
    assert sorted(ko_summaries) == sorted(
        [
            "불량 이미지 12장, 정상 이미지 30장 (2개 제품, 건너뜀 1장)",
            "모델 2개 생성, 실패 1개",
            "1개 제품, 매뉴얼 2개, 청크 40개, 읽지 못함 0개",
        ]
    )
    assert sorted(en_summaries) == sorted(
        [
            "12 defect and 30 normal images (2 products, 1 skipped)",
            "2 models built, 1 failed",
            "1 products, 2 manuals, 40 chunks, 0 unreadable",
        ]
    )
    assert "built=" not in korean
    assert "defect_images=" not in english


def test_anomaly_screen_renders_evaluation_table(client: TestClient) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        cat = make_catalog(session)
        session.add(
            Artifact(
                kind="anomaly_model",
                product_id=cat.products["metal_plate"],
                version="v1",
                path="models/anomaly/metal_plate/v1",
                is_current=True,
                meta={
                    "backbone": "efficientnet-lite0",
                    "bank_size": 16384,
                    "calibration": {"normal_scores": 40},
                    "evaluation": {
                        "image_auroc": 0.9731,
                        "pixel_auroc": 0.9412,
                        "f1": 0.912,
                        "threshold": 2.71828,
                        "confusion": {"tp": 31, "fp": 2, "tn": 38, "fn": 4},
                    },
                },
            )
        )
        session.commit()
    login_page(client, "admin1", ADMIN_PASSWORD)
    page = client.get("/admin/deploy/anomaly")
    row = re.search(r'<tr data-product="metal_plate">(.*?)</tr>', page.text, re.S)
    assert row
    cells = row.group(1)
    for expected in ("efficientnet-lite0", "16384", "2.718", "0.973", "0.941", "0.912", "31 / 2 / 38 / 4"):
        assert expected in cells, expected
    fabric = re.search(r'<tr data-product="fabric">(.*?)</tr>', page.text, re.S)
    assert fabric
    assert "0.9" not in fabric.group(1)


def test_deploy_screen_view_model_uses_the_given_states(client: TestClient) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        cat = make_catalog(session)
        built = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        states = [
            ArtifactState(
                kind="search_index", product_id=cat.products["metal_plate"], state="current", built_at=built
            ),
            ArtifactState(
                kind="search_index",
                product_id=cat.products["fabric"],
                state="stale",
                reasons=["errors.history_range_too_long"],  # any key with params: the engines own theirs
                params={"days": 3},
            ),
            ArtifactState(kind="anomaly_model", product_id=cat.products["fabric"], state="missing"),
        ]
        screen = deploy_service.deploy_screen(
            session, kind="search_index", states=states, is_available=True, page=1
        )
    by_code = {row.product.code: row for row in screen.rows}
    assert by_code["metal_plate"].state is not None
    assert by_code["metal_plate"].state.state == "current"
    assert by_code["fabric"].state is not None
    assert by_code["fabric"].state.state == "stale"
    assert screen.total_inputs == 0
    assert screen.history_total == 0
    html = render_template(
        "admin/deployments/deploy_view.html",
        active="deploy_search",
        slug="search",
        screen=screen,
        watched=[],
        page=1,
        page_size=10,
        error="",
    )
    metal_row = re.search(r'<tr data-product="metal_plate">(.*?)</tr>', html, re.S)
    fabric_row = re.search(r'<tr data-product="fabric">(.*?)</tr>', html, re.S)
    assert metal_row
    assert fabric_row
    assert "최신" in metal_row.group(1)
    assert "2026-03-01" in metal_row.group(1)
    assert "갱신 필요" in fabric_row.group(1)
    assert "조회 기간은 최대 3일입니다." in fabric_row.group(1)  # the reason key, translated with its params
    assert "없음" not in fabric_row.group(1)  # the anomaly state belongs to the other screen


def render_template(name: str, lang: str = "ko", **context: object) -> str:
    """Render a page template outside a request, with the shared context the pages get."""
    env = templates.env
    return env.get_template(name).render(
        t=partial(translate, lang=lang),
        lang=lang,
        languages=LANGUAGES,
        user=None,
        csrf_token="token",
        request_path="/admin",
        **context,
    )
