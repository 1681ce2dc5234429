"""Migration 0003 gives inspections recorded before it their outcome, so the history counts an old unknown as
unknown (never its runner-up) and an old normal part as normal, on SQLite and MariaDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from alembic import command
from tests.db.test_migrations import _config


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("mariadb_server_url")
    return url


def _verdict(defect_type_id: int, *, is_unknown: bool) -> str:
    return json.dumps(
        {"verdict": {"product_id": 1, "defect_type_id": defect_type_id, "score": 0.9, "margin": 0.01,
                     "is_unknown": is_unknown}}
    )  # fmt: skip


def test_existing_inspections_get_their_outcome(db_url: str) -> None:
    config = _config(db_url)
    command.downgrade(config, "base")  # the MariaDB test database is shared by the session: start empty
    command.upgrade(config, "0001")
    engine = sa.create_engine(db_url)
    anomalous = json.dumps({"product_id": 1, "score": 3.0, "threshold": 1.0})
    normal = json.dumps({"product_id": 1, "score": 0.5, "threshold": 1.0})
    rows = {
        1: (_verdict(7, is_unknown=True), anomalous),  # unknown, runner-up 7
        2: (_verdict(8, is_unknown=False), anomalous),  # defect 8
        3: (_verdict(8, is_unknown=False), normal),  # normal despite the search
        4: (None, None),  # only uploaded
    }
    when = "2026-11-30 10:00:00"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO product (id, code, name, description, is_active, created_at, updated_at)"
                " VALUES (1, 'p', 'P', '', 1, :at, :at)"
            ),
            {"at": when},
        )
        for defect_id in (7, 8):
            conn.execute(
                sa.text(
                    "INSERT INTO defect_type (id, product_id, code, name, description, is_active,"
                    " created_at, updated_at) VALUES (:id, 1, :code, 'D', '', 1, :at, :at)"
                ),
                {"id": defect_id, "code": f"d{defect_id}", "at": when},
            )
        for row_id, (search, anomaly) in rows.items():
            conn.execute(
                sa.text(
                    "INSERT INTO inspection (id, status, image_key, original_name, content_type,"
                    " size_bytes, width, height, checksum, search_result, anomaly_result, timings_ms,"
                    " action_taken, created_at, updated_at) VALUES (:id, 'searched', :key, 'a.png',"
                    " 'image/png', 1, 1, 1, 'x', :search, :anomaly, '{}', '', :at, :at)"
                ),
                {
                    "id": row_id,
                    "key": f"inspections/{row_id}/original.png",
                    "search": search,
                    "anomaly": anomaly,
                    "at": when,
                },
            )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        got = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                sa.text("SELECT id, outcome_label, outcome_defect_type_id FROM inspection ORDER BY id")
            )
        }
    engine.dispose()
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    assert got == {1: ("unknown", None), 2: ("defect", 8), 3: ("normal", None), 4: ("pending", None)}
