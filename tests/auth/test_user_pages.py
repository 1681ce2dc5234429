"""The admin users screen: create, change role, reset password, disable; never lose the last admin."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.pages import login_page, page_alert, post_form


def _api_login(client: TestClient, username: str, password: str) -> int:
    """Log in as someone else from a second, cookie-free client of the same app."""
    other = TestClient(client.app)
    return other.post("/api/v1/auth/login", json={"username": username, "password": password}).status_code


def _user_id(client: TestClient, username: str) -> int:
    users = client.get("/api/v1/users").json()
    return next(u["id"] for u in users if u["username"] == username)  # type: ignore[no-any-return]


def test_users_screen_renders_in_korean_and_english(client: TestClient) -> None:
    login_page(client)
    ko = client.get("/admin/users")
    assert "<h1>사용자 관리</h1>" in ko.text
    assert 'data-user="worker1"' in ko.text
    assert 'data-user="admin1"' in ko.text
    assert "<h1>Users</h1>" in client.get("/admin/users", params={"lang": "en"}).text


def test_create_worker_then_reset_password_and_disable(client: TestClient) -> None:
    csrf = login_page(client)
    created = post_form(
        client,
        "/admin/users",
        csrf,
        username="kim",
        display_name="김작업",
        password="first-pass-1",
        role="worker",
    )
    assert "등록했습니다" in created.text  # type: ignore[attr-defined]
    assert 'data-user="kim"' in created.text  # type: ignore[attr-defined]
    uid = _user_id(client, "kim")
    assert _api_login(client, "kim", "first-pass-1") == 200

    reset = post_form(client, f"/admin/users/{uid}/password", csrf, password="second-pass-2")
    assert "비밀번호를 재설정했습니다" in reset.text  # type: ignore[attr-defined]
    assert _api_login(client, "kim", "first-pass-1") == 401
    assert _api_login(client, "kim", "second-pass-2") == 200

    post_form(client, f"/admin/users/{uid}/role", csrf, role="admin")
    assert next(u for u in client.get("/api/v1/users").json() if u["id"] == uid)["role"] == "admin"

    post_form(client, f"/admin/users/{uid}/disable", csrf)
    assert _api_login(client, "kim", "second-pass-2") == 401
    assert 'class="inactive" data-user="kim"' in client.get("/admin/users").text
    post_form(client, f"/admin/users/{uid}/enable", csrf)
    assert _api_login(client, "kim", "second-pass-2") == 200


def test_bad_user_forms_say_why_in_the_users_language(client: TestClient) -> None:
    csrf = login_page(client)
    bad_name = post_form(client, "/admin/users", csrf, username="김 작업자", password="long-enough-1")
    assert bad_name.status_code == 422  # type: ignore[attr-defined]
    assert "아이디" in page_alert(bad_name.text)  # type: ignore[attr-defined]
    assert 'value="김 작업자"' in bad_name.text  # type: ignore[attr-defined]
    assert "long-enough-1" not in bad_name.text  # type: ignore[attr-defined]
    short = post_form(client, "/admin/users", csrf, username="lee", password="short")
    assert short.status_code == 422  # type: ignore[attr-defined]
    assert "자 이상" in page_alert(short.text)  # type: ignore[attr-defined]
    taken = post_form(client, "/admin/users", csrf, username="worker1", password="long-enough-1")
    assert taken.status_code == 409  # type: ignore[attr-defined]
    assert "worker1" in page_alert(taken.text)  # type: ignore[attr-defined]
    wid = _user_id(client, "worker1")
    short_reset = post_form(client, f"/admin/users/{wid}/password", csrf, password="x")
    assert short_reset.status_code == 422  # type: ignore[attr-defined]
    bad_role = post_form(client, f"/admin/users/{wid}/role", csrf, role="root")
    assert bad_role.status_code == 422  # type: ignore[attr-defined]
    assert client.post("/admin/users/9999/disable", data={"csrf_token": csrf}).status_code == 404


def test_the_last_admin_cannot_be_demoted_or_disabled(client: TestClient) -> None:
    csrf = login_page(client)
    aid = _user_id(client, "admin1")
    demote = post_form(client, f"/admin/users/{aid}/role", csrf, role="worker")
    assert demote.status_code == 409  # type: ignore[attr-defined]
    assert "마지막 관리자" in page_alert(demote.text)  # type: ignore[attr-defined]
    disable = post_form(client, f"/admin/users/{aid}/disable", csrf, lang="en")
    assert disable.status_code == 409  # type: ignore[attr-defined]
    assert next(u for u in client.get("/api/v1/users").json() if u["id"] == aid)["role"] == "admin"


def test_workers_get_403_on_the_users_screen(client: TestClient) -> None:
    csrf = login_page(client, "worker1")
    assert client.get("/admin/users").status_code == 403
    assert post_form(client, "/admin/users", csrf, username="x1", password="long-enough-1").status_code == 403  # type: ignore[attr-defined]
    assert post_form(client, "/admin/users/1/role", csrf, role="worker").status_code == 403  # type: ignore[attr-defined]
