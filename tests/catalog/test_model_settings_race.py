"""The model-settings row is created on first use; two first uses at once (two servers, two watched photos
finishing together) must both get the row, not a unique-constraint error that rejects a photo.

MariaDB's consistent reads make the race deterministic: a transaction that has looked once keeps seeing no row
after the other one created it, exactly as when both requests look at the same moment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.catalog.service import get_model_settings
from app.cli import run_migrations
from app.db.session import make_engine, make_session_factory
from app.db.tables import ModelSetting
from tests import services
from tests.conftest import make_settings


@pytest.fixture
def fresh_mariadb() -> Iterator[str]:
    yield from services.mariadb_database()


def test_two_first_uses_at_once_both_get_the_one_settings_row(tmp_path: Path, fresh_mariadb: str) -> None:
    settings = make_settings(tmp_path, database_url=fresh_mariadb)
    run_migrations(settings)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with factory() as first, factory() as second:
            # Both requests look before either creates it.
            assert first.get(ModelSetting, 1) is None
            assert second.get(ModelSetting, 1) is None
            created = get_model_settings(first)
            found = get_model_settings(second)
            assert (created.id, found.id) == (1, 1)
            assert found.allowed_generators == ["extractive"]
        with factory() as session:
            assert session.execute(text("SELECT COUNT(*) FROM model_setting")).scalar_one() == 1
    finally:
        engine.dispose()
