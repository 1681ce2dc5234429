"""Sessions (issue 14, item 8): one session per browser, CSRF bound to the session and rotated at login,
an idle timeout, API tokens with API_TOKEN_TTL_S, and production settings that refuse to start unsafe."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.cli import run_migrations
from app.core.security import token_digest
from app.db.base import utcnow
from app.db.tables import AuthToken
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, make_settings, seed_users
from tests.pages import login_page

STRONG = "Vq8#mZ2!rT5@kL9x"


def _token_row(client: TestClient, token: str) -> AuthToken:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.scalar(select(AuthToken).where(AuthToken.token_hash == token_digest(token)))
        assert row is not None
        return row


def test_a_new_login_in_the_same_browser_revokes_the_old_session(client: TestClient) -> None:
    login_page(client, "worker1")
    old = client.cookies.get("dl_session")
    assert old
    login_page_keeping_cookies = client.post(
        "/login",
        data={
            "username": "worker1",
            "password": WORKER_PASSWORD,
            "next": "/",
            "csrf_token": client.cookies.get("dl_csrf"),
        },
        follow_redirects=False,
    )
    assert login_page_keeping_cookies.status_code == 303
    new = client.cookies.get("dl_session")
    assert new
    assert new != old
    # Before: the old token stayed valid until it expired.
    assert _token_row(client, old).revoked_at is not None
    client.cookies.clear()
    assert client.get("/api/v1/auth/me", cookies={"dl_session": old}).status_code == 401
    assert client.get("/api/v1/auth/me", cookies={"dl_session": new}).status_code == 200


def test_csrf_is_rotated_at_login_and_bound_to_the_session(client: TestClient) -> None:
    client.cookies.clear()
    client.get("/login")
    before = client.cookies.get("dl_csrf")
    after = login_page(client, "admin1")
    assert before
    assert after
    assert before != after  # before: the pre-login token stayed
    # A planted CSRF cookie with a matching header no longer passes (before: double submit accepted it).
    session = client.cookies.get("dl_session")
    client.cookies.clear()
    client.cookies.set("dl_session", session)
    client.cookies.set("dl_csrf", "planted-by-attacker")
    planted = client.post(
        "/api/v1/products",
        json={"code": "evil", "name": "evil"},
        headers={"X-CSRF-Token": "planted-by-attacker"},
    )
    assert planted.status_code == 403
    assert "evil" not in client.get("/api/v1/products").text
    client.cookies.set("dl_csrf", after)
    good = client.post(
        "/api/v1/products", json={"code": "ok1", "name": "ok"}, headers={"X-CSRF-Token": after}
    )
    assert good.status_code == 201, good.text


def test_idle_sessions_expire_and_last_use_is_recorded(client: TestClient) -> None:
    login_page(client, "worker1")
    token = client.cookies.get("dl_session")
    assert client.get("/api/v1/auth/me").status_code == 200
    assert _token_row(client, token).last_used_at is not None  # before: never written
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        session.execute(
            update(AuthToken)
            .where(AuthToken.token_hash == token_digest(token))
            .values(last_used_at=utcnow() - timedelta(hours=2))
        )
        session.commit()
    # Before: a session unused for two hours still worked (no idle timeout).
    assert client.get("/api/v1/auth/me").status_code == 401


def test_api_logins_get_tokens_with_the_api_ttl(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_token_ttl_s=7 * 24 * 3600, session_ttl_s=3600)
    run_migrations(settings)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        body = client.post("/api/v1/auth/login", json={"username": "worker1", "password": WORKER_PASSWORD})
        assert body.status_code == 200
        data = body.json()
        row = _token_row(client, data["access_token"])
        assert row.kind == "api"
        lifetime = row.expires_at - row.created_at
        # Before: every token lived SESSION_TTL_S; API_TOKEN_TTL_S was unused.
        assert timedelta(days=6, hours=23) < lifetime <= timedelta(days=7, seconds=5)
        with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
            session.execute(
                update(AuthToken)
                .where(AuthToken.token_hash == token_digest(data["access_token"]))
                .values(last_used_at=utcnow() - timedelta(hours=3))
            )
            session.commit()
        client.cookies.clear()
        headers = {"Authorization": f"Bearer {data['access_token']}"}
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 200  # no idle timeout


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"cookie_secure": False, "admin_username": "admin", "admin_password": STRONG}, "COOKIE_SECURE"),
        ({"cookie_secure": True}, "ADMIN_PASSWORD"),
        ({"cookie_secure": True, "admin_username": "admin", "admin_password": "changeme"}, "ADMIN_PASSWORD"),
    ],
)
def test_production_refuses_to_start_unsafe(
    tmp_path: Path, overrides: dict[str, object], problem: str
) -> None:
    settings = make_settings(tmp_path, environment="production", **overrides)
    with pytest.raises(RuntimeError, match=problem):  # before: production changed nothing
        create_app(settings)


def test_production_cookies_are_secure_and_hsts_is_sent(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, environment="production", cookie_secure=True, admin_username="boss", admin_password=STRONG
    )
    run_migrations(settings)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        page = client.get("/login")
        assert "Secure" in page.headers["set-cookie"]
        assert page.headers["strict-transport-security"].startswith("max-age=")
        response = client.post("/api/v1/auth/login", json={"username": "boss", "password": STRONG})
        assert response.status_code == 200
        cookies = response.headers.get_list("set-cookie")
        assert {c.split("=", 1)[0] for c in cookies} >= {"dl_session", "dl_csrf"}
        assert all("Secure" in c for c in cookies)
    assert ADMIN_PASSWORD  # the fixture users are not needed here
