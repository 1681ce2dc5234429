"""Login, roles, bearer tokens, sessions, CSRF and rate limiting as API users and browsers meet them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD


def test_login_returns_token_and_user(client: TestClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": "admin1", "password": ADMIN_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["user"]["username"] == "admin1"
    assert body["user"]["role"] == "admin"
    cookie = response.headers["set-cookie"]
    assert "dl_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie


def test_bad_credentials_are_401_in_korean_by_default(client: TestClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": "admin1", "password": "wrong-password"})
    assert response.status_code == 401
    assert response.json()["detail"] == "아이디 또는 비밀번호가 올바르지 않습니다."


def test_error_language_follows_accept_language(client: TestClient) -> None:
    response = client.post(
        "/api/v1/auth/login",
        json={"username": "nobody", "password": "x"},
        headers={"Accept-Language": "en-US,en;q=0.9"},
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "Wrong username or password."


def test_login_is_rate_limited_per_username(client: TestClient) -> None:
    for _ in range(5):
        assert (
            client.post("/api/v1/auth/login", json={"username": "worker1", "password": "bad"}).status_code
            == 401
        )
    blocked = client.post("/api/v1/auth/login", json={"username": "worker1", "password": WORKER_PASSWORD})
    assert blocked.status_code == 429
    # another user is not affected
    ok = client.post("/api/v1/auth/login", json={"username": "admin1", "password": ADMIN_PASSWORD})
    assert ok.status_code == 200


def test_api_needs_credentials(client: TestClient) -> None:
    response = client.get("/api/v1/products")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_worker_is_refused_admin_routes(client: TestClient, worker_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/products", json={"code": "p1", "name": "P"}, headers=worker_headers)
    assert response.status_code == 403
    assert "관리자" in response.json()["detail"]
    assert client.get("/api/v1/products", headers=worker_headers).status_code == 200


def test_me_and_logout_revokes_token(client: TestClient, admin_headers: dict[str, str]) -> None:
    me = client.get("/api/v1/auth/me", headers=admin_headers)
    assert me.json()["username"] == "admin1"
    assert client.post("/api/v1/auth/logout", headers=admin_headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=admin_headers).status_code == 401


def test_expired_session_is_401(client: TestClient, admin_headers: dict[str, str]) -> None:
    from datetime import timedelta

    from app.db.base import utcnow
    from app.db.tables import AuthToken

    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for token in session.query(AuthToken).all():
            token.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    response = client.get("/api/v1/auth/me", headers=admin_headers)
    assert response.status_code == 401
    assert "만료" in response.json()["detail"]


def test_cookie_session_needs_csrf_for_changes(client: TestClient) -> None:
    login = client.post("/api/v1/auth/login", json={"username": "admin1", "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    client.get("/healthz")  # any response hands out the CSRF cookie
    csrf = client.cookies.get("dl_csrf")
    assert csrf
    refused = client.post("/api/v1/products", json={"code": "p1", "name": "P"})
    assert refused.status_code == 403
    assert client.get("/api/v1/products").json() == []  # nothing was written
    accepted = client.post(
        "/api/v1/products", json={"code": "p1", "name": "P"}, headers={"X-CSRF-Token": csrf}
    )
    assert accepted.status_code == 201


def test_users_admin_can_create_disable_and_reset(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = client.post(
        "/api/v1/users",
        json={"username": "kim", "password": "kim-pass-123", "role": "worker"},
        headers=admin_headers,
    )
    assert created.status_code == 201
    user_id = created.json()["id"]
    dup = client.post(
        "/api/v1/users",
        json={"username": "kim", "password": "kim-pass-123", "role": "worker"},
        headers=admin_headers,
    )
    assert dup.status_code == 409
    short = client.post("/api/v1/users", json={"username": "lee", "password": "short"}, headers=admin_headers)
    assert short.status_code == 422
    kim = client.post("/api/v1/auth/login", json={"username": "kim", "password": "kim-pass-123"})
    kim_headers = {"Authorization": f"Bearer {kim.json()['access_token']}"}
    client.cookies.clear()
    assert (
        client.patch(f"/api/v1/users/{user_id}", json={"is_active": False}, headers=admin_headers).status_code
        == 200
    )
    assert client.get("/api/v1/auth/me", headers=kim_headers).status_code == 401
    again = client.post("/api/v1/auth/login", json={"username": "kim", "password": "kim-pass-123"})
    assert again.status_code == 401


def test_last_admin_cannot_be_demoted(client: TestClient, admin_headers: dict[str, str]) -> None:
    me = client.get("/api/v1/auth/me", headers=admin_headers).json()
    response = client.patch(f"/api/v1/users/{me['id']}", json={"role": "worker"}, headers=admin_headers)
    assert response.status_code == 409
