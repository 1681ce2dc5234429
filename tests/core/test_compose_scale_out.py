"""docker-compose.yml: two servers and a worker on one RabbitMQ, and Milvus only when asked for."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_two_servers_and_a_worker_on_rabbitmq_with_milvus_optional() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    broker = "amqp://defectlens:${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}@rabbitmq:5672/defectlens"
    for name in ("app", "app2", "worker"):
        env = services[name]["environment"]
        assert env["JOB_BROKER_URL"] == broker
        assert env["VECTOR_BACKEND"] == "${VECTOR_BACKEND:-faiss}"  # FAISS unless the operator switches
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert (
        services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"]
        == "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}"
    )
    assert services["worker"]["command"][:2] == ["defectlens", "worker"]
    assert services["app2"]["ports"] != services["app"]["ports"]
    assert services["milvus"]["profiles"] == ["milvus"]
    assert all("profiles" not in services[name] for name in ("app", "app2", "worker", "rabbitmq"))
    setup = (ROOT / "scripts" / "compose-secrets.sh").read_text()
    assert "RABBITMQ_PASSWORD:" in setup
