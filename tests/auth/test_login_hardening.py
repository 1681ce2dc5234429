"""Login abuse (issue 14, item 2): real concurrent requests against a real server, SQLite and MariaDB.

The attempt is claimed atomically before the password is hashed, per username and per client address;
past the allowance a growing delay (429 + Retry-After) replaces the old hard lockout, and the right
password passes once the delay is over. At most LOGIN_HASH_CONCURRENCY hashes run at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.auth import service as auth_service
from app.cli import run_migrations
from app.core.config import Settings
from tests import services
from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, make_settings
from tests.live import live_app


def _settings(tmp_path: Path, db_url: str | None, **overrides: object) -> Settings:
    values: dict[str, object] = {"database_url": db_url} if db_url else {}
    settings = make_settings(tmp_path, **values, **overrides)
    run_migrations(settings)
    return settings


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """SQLite (embedded default) or a fresh MariaDB database for this test."""
    if request.param == "sqlite":
        yield None
        return
    yield from services.mariadb_database()


def _login(base: str, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/auth/login", json={"username": username, "password": password}, timeout=60
    )


def test_twelve_concurrent_wrong_passwords_get_exactly_the_allowance(
    tmp_path: Path, db_url: str | None
) -> None:
    settings = _settings(tmp_path, db_url, login_max_attempts=5, login_delay_base_s=30)
    with live_app(settings) as (base, _app), ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _i: _login(base, "worker1", "wrong-password"), range(12)))
    codes = sorted(r.status_code for r in responses)
    # Before: all twelve got 401 (the count and the insert were not atomic).
    assert codes.count(401) == 5, codes
    assert codes.count(429) == 7, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "초" in refused.json()["detail"]


def test_one_address_cannot_spray_many_usernames(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None, login_ip_max_attempts=4, login_delay_base_s=30)
    with live_app(settings) as (base, _app):
        codes = [_login(base, f"guess{i}", "wrong-password").status_code for i in range(8)]
    # Before: eight usernames from one address were unlimited (eight 401s).
    assert codes[:4] == [401, 401, 401, 401]
    assert codes[4:] == [429, 429, 429, 429]


def test_the_right_password_passes_after_a_growing_delay(tmp_path: Path, db_url: str | None) -> None:
    settings = _settings(tmp_path, db_url, login_max_attempts=2, login_delay_base_s=1.0)
    with live_app(settings) as (base, _app):
        for _ in range(2):
            assert _login(base, "admin1", "wrong-password").status_code == 401
        waiting = _login(base, "admin1", ADMIN_PASSWORD)
        assert waiting.status_code == 429
        first_wait = int(waiting.headers["Retry-After"])
        time.sleep(first_wait + 0.2)
        assert _login(base, "admin1", "wrong-password").status_code == 401
        second = _login(base, "admin1", ADMIN_PASSWORD)
        assert second.status_code == 429
        assert int(second.headers["Retry-After"]) >= first_wait  # the delay grows
        time.sleep(int(second.headers["Retry-After"]) + 0.2)
        # Before: a hard lockout for the whole window refused even the right password (admins too).
        assert _login(base, "admin1", ADMIN_PASSWORD).status_code == 200
        # The success cleared the username's failures: a typo is an ordinary 401 again.
        assert _login(base, "admin1", "wrong-password").status_code == 401


def test_password_hashes_are_capped_per_process(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None, login_hash_concurrency=1, login_hash_wait_s=0.2)
    limiter = auth_service._default_limiter(settings)
    with live_app(settings) as (base, _app), limiter.slot(1.0) as held:
        assert held
        busy = _login(base, "worker1", WORKER_PASSWORD)
    assert busy.status_code == 503
    assert busy.headers["Retry-After"]
    with live_app(settings, seed=False) as (base, _app):
        assert _login(base, "worker1", WORKER_PASSWORD).status_code == 200
