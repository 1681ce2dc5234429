"""/metrics shows what to watch when scaling out: queue depth and job age per kind, artifact versions."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.db.base import utcnow
from app.db.tables import Artifact, DeploymentJob
from app.deployments import metrics as deployment_metrics


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_queue_depth_job_age_heartbeat_and_artifact_versions(client: TestClient) -> None:
    now = utcnow()
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.session_factory() as session:
        session.add_all(
            [
                DeploymentJob(kind="anomaly_model", status="queued", created_at=now - timedelta(seconds=90)),
                DeploymentJob(kind="anomaly_model", status="queued", created_at=now - timedelta(seconds=10)),
                DeploymentJob(
                    kind="search_index",
                    status="running",
                    created_at=now - timedelta(seconds=300),
                    started_at=now - timedelta(seconds=200),
                    heartbeat_at=now - timedelta(seconds=45),
                    owner="worker@gpu-1:42:abc",
                ),
                DeploymentJob(kind="manual_index", status="succeeded", created_at=now - timedelta(days=1)),
                Artifact(kind="manual_index", product_id=None, version="v-old", path="x", is_current=False),
                Artifact(kind="manual_index", product_id=None, version="v-new", path="x", is_current=True),
            ]
        )
        session.commit()
    deployment_metrics.note_loaded(services, "manual_index")

    samples = _samples(client)
    kind = (("kind", "anomaly_model"),)
    assert samples[("defectlens_job_queue_depth", kind)] == 2
    assert 85 <= samples[("defectlens_job_oldest_queued_seconds", kind)] < 600
    running = (("kind", "search_index"),)
    assert samples[("defectlens_jobs_running", running)] == 1
    assert 195 <= samples[("defectlens_job_oldest_running_seconds", running)] < 600
    assert 40 <= samples[("defectlens_job_heartbeat_age_seconds", running)] < 600
    assert (
        "defectlens_job_queue_depth",
        (("kind", "manual_index"),),
    ) not in samples  # finished jobs do not count
    current = (("kind", "manual_index"), ("product", ""), ("version", "v-new"))
    assert samples[("defectlens_artifact_current_info", current)] == 1
    assert samples[("defectlens_artifact_loaded_info", current)] == 1
    assert not any(name.endswith("_info") and ("version", "v-old") in labels for name, labels in samples)

    # A newer version is loaded: the server reports it instead of the old one.
    with services.session_factory() as session:
        session.query(Artifact).update({Artifact.is_current: False})
        session.add(Artifact(kind="manual_index", product_id=None, version="v-3", path="x", is_current=True))
        session.commit()
    deployment_metrics.note_loaded(services, "manual_index")
    loaded = {labels for name, labels in _samples(client) if name == "defectlens_artifact_loaded_info"}
    assert loaded == {(("kind", "manual_index"), ("product", ""), ("version", "v-3"))}
