"""Health, readiness, metrics, request ids and error shapes that operators and scripts rely on."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_health_ready_and_metrics(client: TestClient, admin_headers: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["storage"].startswith("ok")
    client.get("/api/v1/products", headers=admin_headers)
    metrics = client.get("/metrics").text
    assert 'defectlens_http_requests_total{method="GET",route="/api/v1/products",status="200"}' in metrics


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "line7-cam2"}).headers["x-request-id"] == "line7-cam2"
    )
    assert len(client.get("/healthz").headers["x-request-id"]) == 16


def test_readyz_reports_storage_failure(client: TestClient) -> None:
    from app.core.storage import S3Storage

    # A real S3 client pointed at a port where nothing listens.
    client.app.state.storage = S3Storage(  # type: ignore[attr-defined]
        endpoint_url="http://127.0.0.1:9", bucket="b", access_key="a", secret_key="s", region="kr-standard"
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"].startswith("error")


def test_validation_errors_are_human_readable(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/products", json={"name": "x"}, headers=admin_headers)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)
    assert "code" in response.json()["detail"]


def test_unknown_page_is_a_friendly_404(client: TestClient) -> None:
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["detail"] == "요청한 항목을 찾을 수 없습니다."


def test_an_id_past_the_integer_range_is_404_not_500(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    huge = "9" * 25
    for path in (f"/api/v1/products/{huge}", f"/api/v1/inspections/{huge}", f"/api/v1/images/{huge}/file"):
        response = client.get(path, headers=admin_headers)
        assert response.status_code == 404, (path, response.text)
