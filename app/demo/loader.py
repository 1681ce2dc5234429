"""`defectlens demo`: generate the demo data set and register it through the same services an admin uses."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from app.auth import service as auth_service
from app.auth.schemas import UserCreate
from app.catalog import service as catalog_service
from app.catalog.schemas import DefectTypeCreate, ProductCreate
from app.core.config import Settings
from app.core.observability import Metrics
from app.core.services import Services
from app.core.storage import ObjectStorage, make_storage
from app.db.session import make_engine, make_session_factory
from app.db.tables import DefectType, User
from app.deployments.jobs import build_now
from app.manuals import service as manual_service
from app.ml.registry import ModelRegistry, resolve_device

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = "demo-credentials.json"


def demo_credentials(settings: Settings) -> dict[str, str]:
    """Demo passwords: random per installation, kept in data/ (never hard-coded)."""
    path = settings.data_path / CREDENTIALS_FILE
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    creds = {"admin": secrets.token_urlsafe(9), "worker": secrets.token_urlsafe(9)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    path.chmod(0o600)
    return creds


def _ensure_user(
    session: Any, settings: Settings, username: str, password: str, role: Literal["worker", "admin"]
) -> None:
    if session.scalar(select(User).where(User.username == username)) is None:
        auth_service.create_user(
            session,
            user_in=UserCreate(username=username, password=password, role=role, display_name=f"demo {role}"),
            settings=settings,
            actor_id=None,
        )


def register_dataset(
    session: Any, *, storage: ObjectStorage, settings: Settings, root: Path
) -> dict[str, int]:
    """Register every product of a generated data set (idempotent: existing products are skipped)."""
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    counts = {"products": 0, "normal": 0, "defect": 0, "manuals": 0}
    for item in manifest["products"]:
        if catalog_service.get_product_by_code(session, code=item["code"]) is not None:
            continue
        product = catalog_service.create_product(
            session,
            product_in=ProductCreate(
                code=item["code"], name=item["name"], description=item.get("description", "")
            ),
            actor_id=None,
        )
        counts["products"] += 1
        types: dict[str, DefectType] = {}
        for dt in item["defect_types"]:
            types[dt["code"]] = catalog_service.create_defect_type(
                session,
                product_id=product.id,
                defect_in=DefectTypeCreate(
                    code=dt["code"], name=dt["name"], description=dt.get("description", "")
                ),
                actor_id=None,
            )
        normals = [_entry_path(e) for e in item["normal_images"] if not _is_holdout(e)]
        files = [(Path(p).name, (root / p).read_bytes()) for p in normals]
        outcome = catalog_service.upload_images(
            session,
            storage=storage,
            settings=settings,
            product_id=product.id,
            kind="normal",
            defect_type_id=None,
            files=files,
            actor_id=None,
        )
        counts["normal"] += len(outcome.created)
        for code, defect_type in types.items():
            entries = [e for e in item["defect_images"] if e["defect_code"] == code and not _is_holdout(e)]
            files = [(Path(e["path"]).name, (root / e["path"]).read_bytes()) for e in entries]
            if not files:
                continue
            outcome = catalog_service.upload_images(
                session,
                storage=storage,
                settings=settings,
                product_id=product.id,
                kind="defect",
                defect_type_id=defect_type.id,
                files=files,
                actor_id=None,
            )
            counts["defect"] += len(outcome.created)
        if item.get("manual_pdf"):
            pdf = root / item["manual_pdf"]
            manual_service.upload_manual(
                session,
                storage=storage,
                settings=settings,
                product_id=product.id,
                file_name=pdf.name,
                data=pdf.read_bytes(),
                actor_id=None,
            )
            counts["manuals"] += 1
    return counts


def _entry_path(entry: Any) -> str:
    return str(entry["path"] if isinstance(entry, dict) else entry)


def _is_holdout(entry: Any) -> bool:
    return bool(isinstance(entry, dict) and entry.get("holdout"))


def load_demo(settings: Settings, *, seed: int = 0, build: bool = True) -> str:
    """Generate (once) and register the demo data; return a summary with the URL hints and logins."""
    from app.demo.generator import generate_demo_dataset

    root = settings.data_path / "demo" / f"seed-{seed}"
    if not (root / "manifest.json").exists():
        generate_demo_dataset(root, seed=seed)
    engine = make_engine(settings.database_url)
    storage = make_storage(settings)
    built: dict[str, str] = {}
    try:
        session_factory = make_session_factory(engine)
        with session_factory() as session:
            creds = demo_credentials(settings)
            _ensure_user(session, settings, "admin", creds["admin"], "admin")
            _ensure_user(session, settings, "worker", creds["worker"], "worker")
            counts = register_dataset(session, storage=storage, settings=settings, root=root)
        if build and (counts["products"] or not _artifacts_exist(settings)):
            services = Services(
                settings=settings,
                storage=storage,
                models=ModelRegistry(settings.models_path, resolve_device(settings.device)),
                session_factory=session_factory,
                metrics=Metrics(),
            )
            built = build_now(services)
    finally:
        engine.dispose()
    lines = [
        f"demo data: {counts['products']} new products, "
        f"{counts['normal']} normal and {counts['defect']} defect images, {counts['manuals']} manuals"
    ]
    if built:
        lines.append("deployments: " + ", ".join(f"{kind} {status}" for kind, status in built.items()))
    lines.append(f"demo logins: admin / {creds['admin']}   worker / {creds['worker']}")
    return "\n".join(lines)


def _artifacts_exist(settings: Settings) -> bool:
    """True when a previous `demo` run already built artifacts (so a re-run does not rebuild)."""
    root = settings.artifacts_path
    return root.exists() and any(root.iterdir())
