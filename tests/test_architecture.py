"""The layers hold: what a request needs never imports the code that builds artifacts (docs/architecture.md).

Imports are read with `ast` from the source files (top level and inside functions, `if TYPE_CHECKING`
included), so a lazy import cannot slip past the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# Packages that serve requests or hold shared infrastructure: none may import app.deployments.
SERVING = ("core", "catalog", "manuals", "inspection")
# What the anomaly request path may touch, in its package and what it imports from there on.
REQUEST_PATH_ROOTS = ("app.inspection.anomaly.service", "app.inspection.anomaly.pictures")
REQUEST_PATH_ALLOWED = ("app.inspection", "app.ml", "app.catalog", "app.core", "app.db")


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a source imports, by absolute name; `package` resolves its relative imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def file_imports(path: Path) -> set[str]:
    """The modules one file of app/ imports."""
    package = ".".join(path.relative_to(APP.parent).with_suffix("").parts[:-1])
    return imported_modules(path.read_text(encoding="utf-8"), package)


def _module_file(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (APP.parent / relative.with_suffix(".py"), APP.parent / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_import_reader_sees_lazy_guarded_and_relative_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from app.deployments.status import ArtifactState\n"
        "def run():\n"
        "    import app.deployments.jobs\n"
        "from ..deployments import queue\n"
    )
    found = imported_modules(source, "app.inspection")
    assert {
        "app.deployments.status",
        "app.deployments.jobs",
        "app.deployments",
        "app.deployments.queue",
    } <= found


@pytest.mark.parametrize("package", SERVING)
def test_serving_packages_do_not_import_deployments(package: str) -> None:
    offenders = {
        str(path.relative_to(APP.parent)): sorted(
            m for m in file_imports(path) if m.startswith("app.deployments")
        )
        for path in sorted((APP / package).rglob("*.py"))
    }
    offenders = {path: modules for path, modules in offenders.items() if modules}
    assert offenders == {}, f"{package} must not import app.deployments (docs/architecture.md)"


def test_anomaly_request_path_stays_in_inspection_ml_catalog_and_core() -> None:
    seen: set[str] = set()
    pending = list(REQUEST_PATH_ROOTS)
    outside: dict[str, str] = {}
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue  # a name imported from a module (a class, a function), or a third-party module
        for module in file_imports(path):
            if not module.startswith("app."):
                continue
            if not module.startswith(REQUEST_PATH_ALLOWED):
                outside.setdefault(module, name)
            elif module not in seen:
                pending.append(module)
    assert "app.ml.anomaly_runtime" in seen  # the walk did follow the path
    assert outside == {}, "the anomaly request reaches outside inspection, ml, catalog and core"
