"""Generator reasons (issue 14, item 10): workers see generic reasons, never server paths or the LLM
server's address; admins see details, without the credentials a base URL may carry."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.conftest import ADMIN_PASSWORD, WORKER_PASSWORD, bearer
from tests.inspection.guidance.conftest import AppFactory


def test_workers_get_generic_reasons_and_admins_details_without_secrets(
    make_client: AppFactory, chat_server: str
) -> None:
    parts = urlsplit(chat_server)
    secret_url = f"{parts.scheme}://llmuser:s3cr3t-pass@{parts.netloc}{parts.path}?api_key=topsecret"
    client = make_client(openai_base_url=secret_url, openai_model="good")
    models_dir = str(client.app.state.settings.models_path)  # type: ignore[attr-defined]
    worker = bearer(client, "worker1", WORKER_PASSWORD)
    seen_by_worker = client.get("/api/v1/generators", headers=worker).text
    # Before: workers saw the server's model paths and the OpenAI-compatible server's address.
    assert models_dir not in seen_by_worker
    assert parts.netloc not in seen_by_worker
    assert "s3cr3t" not in seen_by_worker
    listed = {g["name"]: g for g in client.get("/api/v1/generators", headers=worker).json()}
    assert "관리자에게 문의" in listed["hyperclovax-seed-1.5b"]["reason"]
    admin = bearer(client, "admin1", ADMIN_PASSWORD)
    seen_by_admin = {g["name"]: g for g in client.get("/api/v1/generators", headers=admin).json()}
    assert models_dir in seen_by_admin["hyperclovax-seed-1.5b"]["reason"]
    assert parts.netloc in seen_by_admin["openai:good"]["reason"]
    admin_text = client.get("/api/v1/generators", headers=admin).text
    assert "s3cr3t" not in admin_text
    assert "topsecret" not in admin_text
    assert "llmuser" not in admin_text
    settings_page = client.get("/admin/models", headers=admin)
    assert "s3cr3t" not in settings_page.text
