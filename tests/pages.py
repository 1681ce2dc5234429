"""Helpers for page tests: log in through the real form and post forms with the CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD


def login_page(client: TestClient, username: str = "admin1", password: str | None = None) -> str:
    """Log in through the login form (session cookie kept on the client); returns the CSRF token."""
    if password is None:
        password = ADMIN_PASSWORD if username == "admin1" else WORKER_PASSWORD
    client.cookies.clear()
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/login",
        data={"username": username, "password": password, "next": "/", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    csrf = client.cookies.get("dl_csrf")
    assert csrf
    return csrf


def post_form(client: TestClient, url: str, csrf: str, **data: object) -> object:
    """Submit a page form as the browser does (CSRF token as a hidden field), following the redirect."""
    return client.post(url, data={"csrf_token": csrf, **data})


def page_alert(html: str) -> str:
    """The text of the page's error alert ('' when there is none)."""
    match = re.search(r'<div class="alert" role="alert">(.*?)</div>', html, re.S)
    return match.group(1).strip() if match else ""
