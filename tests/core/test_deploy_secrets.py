"""Compose credentials (issue 14, item 12): no working S3 credentials are committed; the S3 server's
identity comes from the environment (generated at setup), and a real SeaweedFS checks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import services

ROOT = Path(__file__).resolve().parents[2]


def test_no_credentials_are_committed_and_compose_requires_them() -> None:
    # Before: deploy/s3.json held working admin keys for the compose stack.
    assert not (ROOT / "deploy" / "s3.json").exists()
    tracked = subprocess.run(
        ["git", "grep", "-l", "-i", "secretKey"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert [f for f in tracked if not f.startswith(("tests/", "deploy/s3-entrypoint.sh"))] == []
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("s3", "app"):
        env = compose["services"][service]["environment"]
        assert env["S3_ACCESS_KEY"] == "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}"
        assert env["S3_SECRET_KEY"] == "${S3_SECRET_KEY:?set S3_SECRET_KEY}"


def test_setup_generates_distinct_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("S3_ACCESS_KEY=\nDB_PASSWORD=keep-this-one\n")
    subprocess.run(["sh", str(ROOT / "scripts" / "compose-secrets.sh"), str(env_file)], cwd=ROOT, check=True)
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert values["DB_PASSWORD"] == "keep-this-one"
    assert len(values["S3_ACCESS_KEY"]) >= 15
    assert len(values["S3_SECRET_KEY"]) >= 30
    assert len(values["ADMIN_PASSWORD"]) >= 18
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"


def test_the_s3_entrypoint_serves_only_the_environment_identity(tmp_path: Path) -> None:
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists() and shutil.which("weed") is None:
        services.unavailable("SeaweedFS `weed` binary not installed")
    # Ports of its own, as the session's SeaweedFS may be running: S3, master, volume, filer (+10000: gRPC).
    port, master, volume, filer = 17433, 17333, 17340, 17888
    for taken in (port, master, volume, filer, port + 10000, master + 10000, volume + 10000, filer + 10000):
        if services._port_open(taken):
            services.unavailable(f"port {taken} is already taken")
    script = str(ROOT / "deploy" / "s3-entrypoint.sh")
    path = f"{weed.parent}:{os.environ.get('PATH', '')}"
    missing = subprocess.run(["sh", script, "version"], env={"PATH": path}, capture_output=True, text=True)
    assert missing.returncode != 0
    assert "S3_ACCESS_KEY" in missing.stderr
    access, secret = "envaccess123", "envsecret-abcdefghijklmnop"
    (tmp_path / "data").mkdir()
    env = {
        "PATH": path,
        "S3_ACCESS_KEY": access,
        "S3_SECRET_KEY": secret,
        "S3_CONFIG": str(tmp_path / "s3.json"),
    }
    args = [
        "mini",
        f"-dir={tmp_path / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.port={port}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={tmp_path / 's3.json'}",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=16",
    ]
    with (tmp_path / "weed.log").open("wb") as log:
        proc = subprocess.Popen(["sh", script, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not services._port_open(port):
                assert proc.poll() is None, (tmp_path / "weed.log").read_text()[-500:]
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert oct((tmp_path / "s3.json").stat().st_mode & 0o777) == "0o600"

            def client(key: str, secret_key: str) -> object:
                return boto3.client(
                    "s3",
                    endpoint_url=f"http://127.0.0.1:{port}",
                    aws_access_key_id=key,
                    aws_secret_access_key=secret_key,
                    region_name="us-east-1",
                    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
                )

            good = client(access, secret)
            deadline = time.monotonic() + 30
            while True:
                try:
                    good.create_bucket(Bucket="defectlens")  # type: ignore[attr-defined]
                    break
                except ClientError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            with pytest.raises(ClientError):
                client("CHANGE_ME_ACCESS", "CHANGE_ME_SECRET").list_buckets()  # type: ignore[attr-defined]
            with pytest.raises(ClientError):
                client(access, "wrong-secret").list_buckets()  # type: ignore[attr-defined]
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
