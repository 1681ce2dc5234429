"""The `defectlens` command line: serve, migrate, users, demo (and room for more)."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.core.config import BASE_DIR, Settings, get_settings
from app.core.errors import DomainError
from app.core.i18n import translate

logger = logging.getLogger("defectlens.cli")


def run_migrations(settings: Settings, revision: str = "head") -> None:
    """Bring the database to `revision` (the latest schema by default)."""
    from alembic.config import Config

    from alembic import command

    settings.data_path.mkdir(parents=True, exist_ok=True)
    config = Config(str(BASE_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(BASE_DIR / "alembic"))
    config.attributes["url"] = settings.database_url
    command.upgrade(config, revision)


def _cmd_migrate(args: argparse.Namespace) -> int:
    run_migrations(get_settings(), args.revision)
    logger.info("database is at %s", args.revision)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    # One process: models are loaded once and shared by all requests (threads), never per worker.
    uvicorn.run(
        create_app(get_settings()), host=args.host, port=args.port, log_config=None, proxy_headers=True
    )
    return 0


def _cmd_users_create(args: argparse.Namespace) -> int:
    from app.auth import service
    from app.auth.schemas import UserCreate
    from app.db.session import make_engine, make_session_factory

    settings = get_settings()
    password = args.password or getpass.getpass("Password: ")
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            user = service.create_user(
                session,
                user_in=UserCreate(
                    username=args.username,
                    password=password,
                    role=args.role,
                    display_name=args.display_name or args.username,
                ),
                settings=settings,
                actor_id=None,
            )
    except DomainError as exc:
        sys.stderr.write(translate(exc.message_key, **exc.params) + "\n")
        return 1
    finally:
        engine.dispose()
    sys.stdout.write(f"created {user.role} {user.username} (id {user.id})\n")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from app.demo.loader import load_demo

    summary = load_demo(get_settings(), seed=args.seed, build=not args.no_build)
    sys.stdout.write(summary + "\n")
    return 0


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _cmd_evaluate_anomaly(args: argparse.Namespace) -> int:
    from app.core.observability import Metrics
    from app.core.services import Services
    from app.core.storage import make_storage
    from app.db.session import make_engine, make_session_factory
    from app.deployments.anomaly_evaluate import evaluate_product
    from app.ml.loading import apply_inference_threads
    from app.ml.registry import ModelRegistry, resolve_device

    settings = get_settings()
    apply_inference_threads(settings)
    engine = make_engine(settings.database_url)
    services = Services(
        settings=settings,
        storage=make_storage(settings),
        models=ModelRegistry(settings.models_path, resolve_device(settings.device)),
        session_factory=make_session_factory(engine),
        metrics=Metrics(),
    )
    try:
        report = evaluate_product(
            services, args.product, masks_dir=args.masks, normals_dir=args.normals, defects_dir=args.defects
        )
    except DomainError as exc:
        sys.stderr.write(translate(exc.message_key, **exc.params) + "\n")
        return 1
    finally:
        engine.dispose()
    c = report["confusion"]
    lines = [
        f"product {report['product']}  model {report['version']}",
        f"images: {report['n_normal']} normal (outside the bank), {report['n_defect']} defect,"
        f" {report['n_masks']} with masks",
        f"image AUROC  {_fmt(report['image_auroc'])}",
        f"pixel AUROC  {_fmt(report['pixel_auroc'])}",
        f"threshold    {_fmt(report['threshold'])}",
        f"F1           {_fmt(report['f1'])}",
        "confusion    predicted anomaly / predicted normal",
        f"  defect     tp {c['tp']:>5} / fn {c['fn']:>5}",
        f"  normal     fp {c['fp']:>5} / tn {c['tn']:>5}",
    ]
    built = report.get("built")
    if built:
        lines.append(
            f"at build time (held-out split): image AUROC {_fmt(built.get('image_auroc'))},"
            f" pixel AUROC {_fmt(built.get('pixel_auroc'))}, F1 {_fmt(built.get('f1'))}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from app.core.observability import Metrics
    from app.core.services import Services
    from app.core.storage import make_storage
    from app.db.session import make_engine, make_session_factory
    from app.deployments.jobs import make_runner
    from app.deployments.queue import run_worker
    from app.ml.loading import apply_inference_threads, prepare_directories
    from app.ml.registry import ModelRegistry, resolve_device

    settings = get_settings()
    if not settings.job_broker_url:
        sys.stderr.write(translate("errors.worker_needs_broker") + "\n")
        return 2
    prepare_directories(settings)
    apply_inference_threads(settings)
    engine = make_engine(settings.database_url)
    services = Services(
        settings=settings,
        storage=make_storage(settings),
        models=ModelRegistry(settings.models_path, resolve_device(settings.device)),
        session_factory=make_session_factory(engine),
        metrics=Metrics(),
    )
    runner = make_runner(services, role="worker")
    kinds = [k for k in (args.queues or "").split(",") if k] or sorted(runner.handlers)
    unknown = sorted(set(kinds) - set(runner.handlers))
    if unknown:
        sys.stderr.write(translate("errors.worker_unknown_kinds", kinds=", ".join(unknown)) + "\n")
        return 2
    try:
        run_worker(settings, runner, kinds=kinds, concurrency=args.concurrency)
    finally:
        engine.dispose()
    return 0


def _cmd_backup(args: argparse.Namespace) -> int:
    from app.core.backup import create_backup

    try:
        report = create_backup(get_settings(), args.output)
    except DomainError as exc:
        sys.stderr.write(translate(exc.message_key, **exc.params) + "\n")
        return 1
    sys.stdout.write(f"{args.output}: {report.summary()}, {report.size_bytes} bytes\n")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from app.core.backup import restore_backup

    try:
        report = restore_backup(get_settings(), args.archive)
    except DomainError as exc:
        sys.stderr.write(translate(exc.message_key, **exc.params) + "\n")
        return 1
    sys.stdout.write(f"restored {report.summary()}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands register themselves here)."""
    parser = argparse.ArgumentParser(prog="defectlens", description="DefectLens command line")
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="bring the database to the latest schema")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=_cmd_migrate)

    serve = sub.add_parser("serve", help="run the web server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_cmd_serve)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a user")
    create.add_argument("--username", required=True)
    create.add_argument("--password", help="omit to be prompted")
    create.add_argument("--role", choices=["worker", "admin"], default="worker")
    create.add_argument("--display-name", default="")
    create.set_defaults(func=_cmd_users_create)

    demo = sub.add_parser("demo", help="generate and load the demo data through the admin services")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--no-build", action="store_true", help="register data only; do not run the deployments"
    )
    demo.set_defaults(func=_cmd_demo)

    worker = sub.add_parser("worker", help="run deployment jobs from the queue (needs JOB_BROKER_URL)")
    worker.add_argument(
        "--queues", default="", help="comma-separated job kinds to take (default: all), e.g. anomaly_model"
    )
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once in this process")
    worker.set_defaults(func=_cmd_worker)

    backup = sub.add_parser(
        "backup", help="write a consistent archive: database rows, stored objects, current artifacts"
    )
    backup.add_argument("--output", type=Path, required=True, help="the archive to write (a .tar file)")
    backup.set_defaults(func=_cmd_backup)

    restore = sub.add_parser("restore", help="fill an empty instance from a backup archive")
    restore.add_argument("archive", type=Path)
    restore.set_defaults(func=_cmd_restore)

    evaluate = sub.add_parser("evaluate", help="measure a built model on labelled images")
    evaluate_sub = evaluate.add_subparsers(dest="evaluate_command", required=True)
    anomaly = evaluate_sub.add_parser(
        "anomaly", help="image/pixel AUROC, F1 and confusion matrix of a product's anomaly model"
    )
    anomaly.add_argument("--product", required=True, help="product code")
    anomaly.add_argument("--masks", type=Path, help="ground-truth masks named like the defect images")
    anomaly.add_argument("--normals", type=Path, help="extra normal images (not registered)")
    anomaly.add_argument("--defects", type=Path, help="extra defect images (not registered)")
    anomaly.set_defaults(func=_cmd_evaluate_anomaly)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `defectlens` command."""
    from app.core.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json_logs=False)
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
