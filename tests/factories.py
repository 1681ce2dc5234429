"""Test data made through the real services, in one place: users, a catalog, inspections with their step
results, and a demo installation (generated demo data registered, its artifacts built by the real jobs).

Every test that needs such data makes it here rather than with a copy of its own.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.catalog import service as catalog_service
from app.catalog.schemas import DefectTypeCreate, ProductCreate
from app.cli import run_migrations
from app.core.config import Settings
from app.core.observability import Metrics
from app.core.services import Services
from app.core.storage import ObjectStorage, make_storage
from app.db.session import make_engine, make_session_factory
from app.db.tables import DefectType, Inspection, Product, User
from app.demo.generator import DemoManifest, generate_demo_dataset
from app.demo.loader import register_dataset
from app.inspection import outcome as outcome_service
from app.inspection import service as inspection_service
from app.main import create_app
from app.ml.registry import ModelRegistry

ADMIN_PASSWORD = "admin-pass-123"
WORKER_PASSWORD = "worker-pass-123"
USERS = ("admin1", "worker1")  # the role is the name without its number


def png_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (120, 130, 140), fmt: str = "PNG"
) -> bytes:
    """A small real image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


@contextmanager
def open_session(settings: Settings) -> Iterator[Session]:
    """A session on the settings' database outside any app (e.g. beside a live server)."""
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


@contextmanager
def offline_services(settings: Settings) -> Iterator[Services]:
    """The services of an app that is not running, to seed data or build artifacts before a server starts."""
    engine = make_engine(settings.database_url)
    try:
        yield Services(
            settings,
            make_storage(settings),
            ModelRegistry(settings.models_path),
            make_session_factory(engine),
            Metrics(),
        )
    finally:
        engine.dispose()


# --- Users -------------------------------------------------------------------------------------------


def make_users(
    session: Session, settings: Settings, *, usernames: Sequence[str] = USERS, password: str | None = None
) -> dict[str, int]:
    """Users through the service (admin1 is an admin, worker1 a worker), each with `password` or, when
    none is given, ADMIN_PASSWORD / WORKER_PASSWORD; their ids by name."""
    ids = {}
    for name in usernames:
        role = name.rstrip("0123456789")
        default = ADMIN_PASSWORD if role == "admin" else WORKER_PASSWORD
        user = auth_service.create_user(
            session,
            user_in=UserCreate(username=name, password=password or default, role=role),  # type: ignore[arg-type]
            settings=settings,
            actor_id=None,
        )
        ids[name] = user.id
    return ids


def seed_users(app_settings: Settings, client: TestClient) -> None:
    """Create one admin (admin1) and one worker (worker1) in the app's database."""
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        make_users(session, app_settings)


def user_id(session: Session, username: str) -> int:
    """The id of a seeded user."""
    return session.scalars(select(User.id).where(User.username == username)).one()


# --- Catalog -----------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """Ids of what `make_catalog` created."""

    products: dict[str, int] = field(default_factory=dict)
    defects: dict[str, int] = field(default_factory=dict)


def make_products(session: Session, products: Iterable[tuple[str, str]]) -> list[int]:
    """Products (code, name) through the catalog service; their ids in order."""
    return [
        catalog_service.create_product(
            session, product_in=ProductCreate(code=code, name=name), actor_id=None
        ).id
        for code, name in products
    ]


def make_catalog(session: Session) -> Catalog:
    """Two products with Korean names and two / one defect types."""
    catalog = Catalog()
    for code, name, defects in (
        ("metal_plate", "금속 판", (("scratch", "긁힘"), ("dent", "찍힘"))),
        ("fabric", "직물", (("hole", "구멍"),)),
    ):
        (catalog.products[code],) = make_products(session, [(code, name)])
        for dcode, dname in defects:
            defect = catalog_service.create_defect_type(
                session,
                product_id=catalog.products[code],
                defect_in=DefectTypeCreate(code=dcode, name=dname),
                actor_id=None,
            )
            catalog.defects[dcode] = defect.id
    return catalog


# --- Inspections -------------------------------------------------------------------------------------


def make_inspection(
    session: Session,
    storage: ObjectStorage,
    settings: Settings,
    *,
    username: str = "worker1",
    product_id: int | None = None,
    verdict_product_id: int | None = None,
    defect_type_id: int | None = None,
    anomaly: bool | None = None,
    generator: str | None = None,
    score: int | None = None,
    action: str = "",
    created_at: datetime | None = None,
    color: tuple[int, int, int] = (120, 130, 140),
    extra: dict[str, Any] | None = None,
    is_unknown: bool | None = None,
) -> Inspection:
    """An uploaded inspection (through the inspection service, photo stored) with the given step results
    written on the row as the step services store them."""
    user = session.get(User, user_id(session, username))
    assert user is not None
    row = inspection_service.create_inspection(
        session,
        storage=storage,
        settings=settings,
        data=png_bytes(color=color),
        file_name="part.png",
        product_id=product_id,
        user=user,
    )
    if defect_type_id is not None or verdict_product_id is not None:
        row.verdict_product_id = verdict_product_id or product_id
        row.verdict_defect_type_id = defect_type_id
        row.verdict_score = 0.91
        row.is_unknown = defect_type_id is None if is_unknown is None else is_unknown
        row.search_result = {
            "inspection_id": row.id,
            "verdict": {
                "product_id": row.verdict_product_id,
                "defect_type_id": defect_type_id,
                "score": 0.91,
                "margin": 0.2,
                "is_unknown": row.is_unknown,
                "min_score": 0.5,
                "min_margin": 0.05,
                "threshold_source": "default",
            },
            "matches": [],
            "top_k": 5,
            "embedder": "test",
            "elapsed_ms": 1.0,
        }
        row.status = "searched"
    if anomaly is not None:
        row.is_anomaly = anomaly
        row.anomaly_score = 3.2 if anomaly else 0.4
        anomaly_product = product_id or verdict_product_id
        if anomaly_product is not None:
            row.anomaly_result = {
                "product_id": anomaly_product,
                "score": row.anomaly_score,
                "threshold": 1.0,
                "regions": [],
            }
        row.status = "anomaly_checked"
    # the outcome as the step services store it
    outcome_service.refresh_outcome(row)
    if generator is not None:
        row.generator = generator
        row.status = "guided"
    if action or score is not None:
        row.action_taken = action
        row.feedback_score = score
        row.feedback_by = user.id
        row.feedback_at = created_at or datetime.now(UTC)
        row.completed_at = row.feedback_at
        row.status = "completed"
    if created_at is not None:
        row.created_at = created_at
    for key, value in (extra or {}).items():
        setattr(row, key, value)
    session.commit()
    return row


def days_ago(days: int, hour: int = 12) -> datetime:
    """Noon (server local time) `days` days ago, as an aware datetime."""
    now = datetime.now().astimezone()
    return (now - timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


# --- A demo installation -----------------------------------------------------------------------------


def demo_dataset(root: Path, *, defects_per_type: int, normals_per_product: int = 8) -> DemoManifest:
    """The seeded 128 px demo data set (images, masks, manuals, manifest.json) written under `root`."""
    return generate_demo_dataset(
        root, seed=0, size=128, normals_per_product=normals_per_product, defects_per_type=defects_per_type
    )


def register_demo(session: Session, storage: ObjectStorage, settings: Settings, root: Path) -> dict[str, int]:
    """Register the demo data under `root` through the services; the product ids by code."""
    register_dataset(session, storage=storage, settings=settings, root=root)
    return {p.code: p.id for p in session.scalars(select(Product))}


def bearer(client: TestClient, username: str, password: str) -> dict[str, str]:
    """Log in over the API and return the Authorization header."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # keep the client cookie-free: bearer calls only
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def deploy(
    client: TestClient, admin: dict[str, str], kind: str, product_id: int | None, *, timeout: float = 600
) -> dict[str, Any]:
    """Start a deployment job over the API, wait until the runner is idle; the job as the API reads it."""
    response = client.post(
        "/api/v1/deployments", json={"kind": kind, "product_id": product_id}, headers=admin
    )
    assert response.status_code == 202, response.text
    assert client.app.state.runner.wait_idle(timeout)  # type: ignore[attr-defined]
    job: dict[str, Any] = client.get(f"/api/v1/deployments/{response.json()['id']}", headers=admin).json()
    return job


@dataclass
class DemoEnv:
    """A running app on demo data: its settings, logins, ids and the generated files."""

    client: TestClient
    settings: Settings
    admin: dict[str, str]
    worker: dict[str, str]
    products: dict[str, int]  # by code
    types: dict[tuple[int, str], int]  # defect type ids by (product id, code)
    root: Path
    manifest: DemoManifest


@contextmanager
def demo_env(
    settings: Settings, *, defects_per_type: int, builds: Sequence[tuple[str, str | None]] = ()
) -> Iterator[DemoEnv]:
    """The app on migrated `settings` with admin1 / worker1 and the demo data registered (its manual
    uploads indexed), then each (kind, product code or None for all) of `builds` deployed by its job,
    which must succeed."""
    run_migrations(settings)
    root = settings.data_path / "demo" / "seed-0"
    manifest = demo_dataset(root, defects_per_type=defects_per_type)
    with TestClient(create_app(settings)) as client:
        seed_users(settings, client)
        state = client.app.state  # type: ignore[attr-defined]
        with state.session_factory() as session:
            products = register_demo(session, state.storage, settings, root)
            types = {(d.product_id, d.code): d.id for d in session.scalars(select(DefectType))}
        admin = bearer(client, "admin1", ADMIN_PASSWORD)
        worker = bearer(client, "worker1", WORKER_PASSWORD)
        assert state.runner.wait_idle(600)  # manual uploads queue their own indexing
        for kind, code in builds:
            job = deploy(client, admin, kind, None if code is None else products[code])
            assert job["status"] == "succeeded", job
        yield DemoEnv(client, settings, admin, worker, products, types, root, manifest)


def mariadb_s3_settings(
    tmp_path: Path, s3_server: dict[str, str], *, bucket_prefix: str, **overrides: Any
) -> Iterator[Settings]:
    """Settings on a fresh, migrated MariaDB database and a new S3 bucket (dropped afterwards)."""
    from tests import services
    from tests.conftest import make_settings

    for url in services.mariadb_database():
        settings = make_settings(
            tmp_path,
            database_url=url,
            storage_backend="s3",
            s3_endpoint_url=s3_server["endpoint"],
            s3_bucket=f"{bucket_prefix}-{uuid.uuid4().hex[:8]}",
            s3_access_key=s3_server["access_key"],
            s3_secret_key=s3_server["secret_key"],
            s3_create_bucket=True,
            **overrides,
        )
        run_migrations(settings)
        yield settings
