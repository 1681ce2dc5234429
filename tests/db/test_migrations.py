"""Every migration runs up and down on SQLite and on MariaDB, and matches the ORM tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from alembic import command
from app.core.config import BASE_DIR
from app.db.tables import Base


def _config(url: str) -> Config:
    config = Config(str(BASE_DIR / "alembic.ini"))
    config.attributes["url"] = url
    return config


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("mariadb_server_url")
    return url


def test_upgrade_matches_models_and_downgrades_cleanly(db_url: str) -> None:
    config = _config(db_url)
    command.upgrade(config, "head")
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        if engine.dialect.name != "sqlite":
            charset = conn.execute(
                sa.text(
                    "SELECT CCSA.character_set_name FROM information_schema.TABLES T JOIN "
                    "information_schema.COLLATION_CHARACTER_SET_APPLICABILITY CCSA "
                    "ON CCSA.collation_name = T.table_collation "
                    "WHERE T.table_schema = DATABASE() AND T.table_name = 'product'"
                )
            ).scalar()
            assert charset == "utf8mb4"
    command.downgrade(config, "base")
    with engine.connect() as conn:
        assert [t for t in sa.inspect(conn).get_table_names() if t != "alembic_version"] == []
    command.upgrade(config, "head")
    engine.dispose()


def test_korean_text_and_case_sensitive_keys_survive(db_url: str) -> None:
    from app.db.session import make_engine, make_session_factory
    from app.db.tables import Product, ReferenceImage

    command.upgrade(_config(db_url), "head")
    engine = make_engine(db_url)
    with make_session_factory(engine)() as session:
        product = Product(code="battery_cap", name="전지 캡 😀", description="긁힘 · 찍힘")
        session.add(product)
        session.flush()
        for n, key in enumerate(
            ("images/normal/1/A.png", "images/normal/1/a.png")
        ):  # distinct (binary collation)
            session.add(
                ReferenceImage(
                    product_id=product.id,
                    kind="normal",
                    seq=n,
                    file_name=f"f{n}.png",
                    object_key=key,
                    content_type="image/png",
                    size_bytes=1,
                    width=1,
                    height=1,
                    checksum="0" * 64,
                )
            )
        session.commit()
        assert session.get(Product, product.id).name == "전지 캡 😀"  # type: ignore[union-attr]
    engine.dispose()
