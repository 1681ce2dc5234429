"""`defectlens demo` registers generated data through the admin services: products, types, images."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from app.core.config import Settings
from app.core.storage import make_storage
from app.db.session import make_engine, make_session_factory
from app.db.tables import DefectType, Product, ReferenceImage
from app.demo.generator import generate_demo_dataset
from app.demo.loader import demo_credentials, register_dataset


def test_register_dataset_is_complete_and_idempotent(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    manifest = generate_demo_dataset(root, seed=1, size=96, normals_per_product=5, defects_per_type=2)
    engine = make_engine(settings.database_url)
    storage = make_storage(settings)
    with make_session_factory(engine)() as session:
        counts = register_dataset(session, storage=storage, settings=settings, root=root)
        assert counts["products"] >= 3
        products = session.scalars(select(Product)).all()
        assert {p.code for p in products} == {p.code for p in manifest.products}
        assert session.scalar(select(func.count()).select_from(DefectType)) == sum(
            len(p.defect_types) for p in manifest.products
        )
        names = [r.file_name for r in session.scalars(select(ReferenceImage))]
        assert any(n.startswith("metal_plate_ok_") for n in names)
        assert any(n.startswith("metal_plate_scratch_001") for n in names)
        # every row points at a stored object
        keys = set(storage.list("images/"))
        assert {r.object_key for r in session.scalars(select(ReferenceImage))} == keys
        assert (
            register_dataset(session, storage=storage, settings=settings, root=root)["products"] == 0
        )  # second run adds nothing
    engine.dispose()


def test_demo_passwords_are_random_and_stable(settings: Settings) -> None:
    first = demo_credentials(settings)
    assert first == demo_credentials(settings)
    assert len(first["admin"]) >= 10
    assert first["admin"] != first["worker"]
    assert first["admin"] not in {"admin", "worker"}
