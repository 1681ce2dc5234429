"""Every route is protected unless public on purpose; the login page works in a browser-like client."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/docs"),  # the API docs (DOCS_ENABLED=false turns them off)
    ("GET", "/redoc"),
}


def _api_routes(routes: list[object]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # FastAPI's wrapper for included routers
            found.extend(_api_routes(route.original_router.routes))
    return found


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_non_public_route_refuses_anonymous_callers(client: TestClient) -> None:
    checked = 0
    for route in _api_routes(client.app.routes):  # type: ignore[attr-defined]
        for method in route.methods - {"HEAD", "OPTIONS"}:
            if (method, route.path) in PUBLIC:
                continue
            response = client.request(
                method,
                _fill(route.path),
                follow_redirects=False,
                headers={"X-CSRF-Token": "x"},
                cookies={"dl_csrf": "x"},
            )
            if route.path.startswith("/api/"):
                assert response.status_code == 401, (method, route.path, response.status_code)
            else:
                assert response.status_code in {303, 401, 403}, (method, route.path, response.status_code)
                if response.status_code == 303:
                    assert response.headers["location"].startswith("/login")
            checked += 1
    assert checked > 20


def test_pages_redirect_to_login_and_back(client: TestClient) -> None:
    response = client.get("/admin/products", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin%2Fproducts"


def _login_form(client: TestClient, username: str, password: str, next_url: str = "/") -> object:
    page = client.get("/login")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    return client.post(
        "/login",
        data={"username": username, "password": password, "next": next_url, "csrf_token": token.group(1)},
        follow_redirects=False,
    )


def test_login_form_sets_session_and_shows_korean_admin(client: TestClient) -> None:
    response = _login_form(client, "admin1", ADMIN_PASSWORD, "/admin/products")
    assert response.status_code == 303  # type: ignore[attr-defined]
    assert response.headers["location"] == "/admin/products"  # type: ignore[attr-defined]
    page = client.get("/admin")
    assert page.status_code == 200
    for label in (
        "통합 대시보드",
        "제품 관리",
        "매뉴얼 관리",
        "불량 유형 관리",
        "정상 이미지 등록",
        "불량 이미지 등록",
        "이미지 전처리 설정",
        "모델 선택",
        "CLIP 임베딩 재구축",
        "PatchCore 메모리뱅크 생성",
    ):
        assert label in page.text
    english = client.get("/admin?lang=en")
    assert "Dashboard" in english.text
    assert "통합 대시보드" not in english.text
    assert client.get("/admin").text.count("Dashboard") >= 1  # the choice sticks (cookie)


def test_login_form_without_csrf_is_refused(client: TestClient) -> None:
    client.get("/login")
    response = client.post(
        "/login", data={"username": "admin1", "password": ADMIN_PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 403
    assert "dl_session" not in response.headers.get("set-cookie", "")


def test_login_form_rejects_open_redirects(client: TestClient) -> None:
    response = _login_form(client, "admin1", ADMIN_PASSWORD, "https://evil.example/")
    assert response.headers["location"] == "/admin"  # type: ignore[attr-defined]


def test_wrong_password_shows_form_again(client: TestClient) -> None:
    response = _login_form(client, "admin1", "nope")
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "아이디 또는 비밀번호가 올바르지 않습니다." in response.text  # type: ignore[attr-defined]


def test_worker_sees_steps_but_not_admin(client: TestClient) -> None:
    _login_form(client, "worker1", WORKER_PASSWORD)
    home = client.get("/")
    for step in ("이미지 업로드", "유사도 매칭", "이상 탐지", "대응 매뉴얼"):
        assert step in home.text
    assert client.get("/admin").status_code == 403


def test_logout_form_ends_session(client: TestClient) -> None:
    _login_form(client, "worker1", WORKER_PASSWORD)
    csrf = client.cookies.get("dl_csrf")
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303
