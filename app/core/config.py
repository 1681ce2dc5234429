"""One typed Settings object for the whole application, read from the environment and `.env`."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from app.core.inference import GateLimits

BASE_DIR = Path(__file__).resolve().parents[2]

# Request-body limits per upload route, in one place: photos are small, ZIP archives and manuals large,
# every other body (JSON, forms) gets MAX_REQUEST_BYTES. The middleware refuses a body over its route's
# limit before anything reads it.
_UPLOAD_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/api/v1/(inspections|analyze)/?$"), "max_inspection_upload_bytes"),
    (re.compile(r"^/api/v1/products/\d+/images/?$"), "max_zip_bytes"),
    (re.compile(r"^/api/v1/products/\d+/manuals/?$"), "max_manual_bytes"),
)
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_WEAK_PASSWORDS = {"admin", "administrator", "password", "changeme", "change_me", "defectlens", "12345678"}


class Settings(BaseSettings):
    """Every setting DefectLens reads; `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- General
    environment: Literal["development", "production", "test"] = "development"
    base_dir: Path = BASE_DIR
    data_dir: Path | None = None
    models_dir: Path | None = None
    manual_store_dir: Path | None = None
    default_language: Literal["ko", "en"] = "ko"
    log_level: str = "INFO"
    log_json: bool = True
    public_base_url: str = ""

    # --- Database
    database_url: str = ""
    database_echo: bool = False

    # --- Object storage
    storage_backend: Literal["local", "s3"] = "local"
    local_storage_dir: Path | None = None
    s3_endpoint_url: str = ""
    s3_region: str = "kr-standard"
    s3_bucket: str = "defectlens"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_create_bucket: bool = False
    s3_serve_via_app: bool = False
    presigned_url_ttl_s: int = Field(default=300, ge=10, le=86400)

    # --- Auth
    admin_username: str = ""
    admin_password: SecretStr = SecretStr("")
    session_ttl_s: int = Field(default=8 * 3600, ge=60)
    api_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    session_idle_timeout_s: int = Field(default=30 * 60, ge=60)
    cookie_secure: bool = False
    login_max_attempts: int = Field(default=5, ge=1)
    login_window_s: int = Field(default=300, ge=1)
    login_delay_base_s: float = Field(default=1.0, gt=0)
    login_max_delay_s: int = Field(default=60, ge=1)
    login_ip_max_attempts: int = Field(default=30, ge=1)
    login_ip_max_delay_s: int = Field(default=900, ge=1)
    login_hash_concurrency: int = Field(default=2, ge=1)
    login_hash_wait_s: float = Field(default=5.0, ge=0)
    min_password_length: int = Field(default=8, ge=4)

    # --- HTTP hardening
    hsts_max_age_s: int = Field(default=31_536_000, ge=0)
    docs_enabled: bool = True

    # --- Upload limits (which route gets which limit: `body_limit` below)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    # Several views per inspection: at most this many labelled photos in one upload (each up to
    # MAX_UPLOAD_BYTES; the request as a whole up to MAX_UPLOAD_BYTES x this).
    max_inspection_views: int = Field(default=6, ge=1, le=32)
    max_image_pixels: int = Field(default=25_000_000, ge=1024)
    max_decode_side: int = Field(default=2048, ge=64)
    max_image_aspect_ratio: float = Field(default=20.0, ge=1.0)
    min_image_side: int = Field(default=16, ge=1)
    max_zip_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_zip_entries: int = Field(default=5000, ge=1)
    max_zip_uncompressed_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1024)
    max_manual_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_manual_pages: int = Field(default=500, ge=1)
    # Photos by URL (`POST /inspections` with `url`): comma-separated host names, `*.domain`, IPs or CIDR
    # networks. Empty: fetching by URL is off. Internal addresses need their IP or network listed too.
    url_fetch_allowed_hosts: str = ""
    url_fetch_timeout_s: float = Field(default=10.0, gt=0, le=120)
    url_fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    # Bounded manual parsing (a separate process): decoded page content, CPU seconds, wall seconds, memory.
    max_manual_decoded_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    manual_parse_cpu_s: int = Field(default=30, ge=1)
    manual_parse_wall_s: float = Field(default=90.0, ge=1.0)
    manual_parse_memory_mb: int = Field(default=1536, ge=256)

    # --- Models and inference
    device: Literal["auto", "cpu", "cuda"] = "auto"
    load_models: bool = True
    clip_arch: str = "ViT-B-32"
    # What runs the image embedder and PatchCore's feature network: "auto" (the fastest installed one whose
    # scores equal PyTorch's, checked when the artifact is built or the embedder loaded), or one by name.
    inference_runtime: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    # Anomaly backbone "auto": the default (EfficientNet-Lite0) stays unless another backbone's validation
    # image AUROC beats it by this margin with a paired DeLong z of at least ANOMALY_BACKBONE_MIN_Z (0: the
    # margin alone), on at least this many held-out normal and defect images each (fewer: no search).
    anomaly_backbone_margin: float = Field(default=0.05, ge=0.0, le=1.0)
    anomaly_backbone_min_z: float = Field(default=1.645, ge=0.0)
    anomaly_backbone_min_validation: int = Field(default=10, ge=1)
    text_embedder: str = "use"
    search_min_score: float = 0.5
    search_min_margin: float = 0.02
    job_workers: int = Field(default=1, ge=1, le=8)
    inference_concurrency: int = Field(default=2, ge=1)
    inference_queue_size: int = Field(default=16, ge=0)
    inference_queue_wait_s: float = Field(default=20.0, gt=0)
    # Per-step overrides of INFERENCE_CONCURRENCY (0: use it), e.g. more anomaly than search slots.
    inference_search_concurrency: int = Field(default=0, ge=0)
    inference_anomaly_concurrency: int = Field(default=0, ge=0)
    # torch intra-op threads per running step; 0: the CPU's cores divided by the steps that may run at once.
    inference_threads: int = Field(default=0, ge=0)
    # Micro-batching: concurrent calls of one model are combined; the first waits this long for company.
    batch_wait_ms: float = Field(default=2.0, ge=0, le=100)
    # Calls per batch (1: off); 0: by device (1 on the CPU, where batches cost more per image, 8 on CUDA).
    batch_max: int = Field(default=0, ge=0, le=64)

    # --- Job workers (scale-out). Empty broker: jobs run in threads of the server process.
    job_broker_url: str = ""
    job_queue_prefix: str = Field(default="defectlens", pattern=r"^[A-Za-z0-9_.-]+$")
    job_heartbeat_s: float = Field(default=5.0, gt=0)
    job_stale_after_s: float = Field(default=30.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    artifact_poll_s: float = Field(default=2.0, gt=0)

    # --- Vector store for the search galleries: faiss (in-process, saved as files) or milvus (a Milvus
    # server keeps the vectors; for galleries of millions of images shared by several servers)
    vector_backend: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str = ""
    milvus_token: SecretStr = SecretStr("")
    milvus_collection_prefix: str = Field(default="defectlens", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
    milvus_timeout_s: float = Field(default=30.0, gt=0)

    # --- Result delivery to line systems (MQTT, webhooks): how often the outbox is sent, how many tries
    sink_poll_s: float = Field(default=1.0, gt=0)
    sink_max_attempts: int = Field(default=6, ge=1, le=50)
    # Watched drop folders must lie inside these comma-separated folders (default: <DATA_DIR>/watch)
    watch_folder_roots: str = ""
    watch_poll_s: float = Field(default=1.0, gt=0)
    # S3 prefixes that may be watched, comma-separated `s3://bucket/prefix/` (empty: no S3 watching). They are
    # read with S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY and S3_REGION.
    watch_s3_prefixes: str = ""

    # --- Generators
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_new_tokens: int = Field(default=512, ge=16)
    openai_base_url: str = ""
    openai_model: str = ""
    openai_api_key: SecretStr = SecretStr("")
    openai_is_vision: bool = False

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        if self.data_dir is None:
            self.data_dir = self.base_dir / "data"
        if self.models_dir is None:
            self.models_dir = self.base_dir / "models"
        if self.manual_store_dir is None:
            self.manual_store_dir = self.base_dir / "manual_store"
        if self.local_storage_dir is None:
            self.local_storage_dir = self.data_dir / "objects"
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'defectlens.db'}"
        if self.vector_backend == "milvus" and not self.milvus_uri:
            raise ValueError("VECTOR_BACKEND=milvus needs MILVUS_URI (e.g. http://milvus-host:19530)")
        return self

    @property
    def max_inspection_upload_bytes(self) -> int:
        """The photo routes' body limit: one photo per view, each up to MAX_UPLOAD_BYTES."""
        return self.max_upload_bytes * self.max_inspection_views

    def body_limit(self, method: str, path: str) -> int:
        """The most bytes a request body to this route may have (uploads large, everything else small)."""
        if method == "POST":
            for pattern, field in _UPLOAD_ROUTES:
                if pattern.match(path):
                    return int(getattr(self, field)) + MULTIPART_OVERHEAD_BYTES
        return self.max_request_bytes

    def production_problems(self) -> list[str]:
        """Why these settings are unsafe for ENVIRONMENT=production (empty: safe or not production)."""
        if self.environment != "production":
            return []
        problems = []
        if not self.cookie_secure:
            problems.append("COOKIE_SECURE must be true in production (serve DefectLens over HTTPS)")
        password = self.admin_password.get_secret_value()
        if not password:
            problems.append("ADMIN_PASSWORD must be set in production")
        elif len(password) < 12 or password.lower() in _WEAK_PASSWORDS or len(set(password)) < 6:
            problems.append("ADMIN_PASSWORD is too weak for production (12+ characters, not a default)")
        return problems

    def inference_limits(self, step: str) -> GateLimits:
        """Running and waiting places of one inference step's gate."""
        from app.core.inference import GateLimits

        own = {"search": self.inference_search_concurrency, "anomaly": self.inference_anomaly_concurrency}
        return GateLimits(
            concurrency=own.get(step) or self.inference_concurrency, queue_size=self.inference_queue_size
        )

    @property
    def url_fetch_hosts(self) -> tuple[str, ...]:
        """The listed hosts for fetching photos by URL."""
        return tuple(h.strip() for h in self.url_fetch_allowed_hosts.split(",") if h.strip())

    @property
    def data_path(self) -> Path:
        """The data directory (always set after validation)."""
        assert self.data_dir is not None  # noqa: S101 - set by the validator
        return self.data_dir

    @property
    def models_path(self) -> Path:
        """Where model weights and built artifacts live."""
        assert self.models_dir is not None  # noqa: S101 - set by the validator
        return self.models_dir

    @property
    def manual_store_path(self) -> Path:
        """Where manual indexes live."""
        assert self.manual_store_dir is not None  # noqa: S101 - set by the validator
        return self.manual_store_dir

    @property
    def local_storage_path(self) -> Path:
        """Root of the local object store."""
        assert self.local_storage_dir is not None  # noqa: S101 - set by the validator
        return self.local_storage_dir

    @property
    def artifacts_path(self) -> Path:
        """Built artifacts (galleries, memory banks) under models/."""
        return self.models_path / "artifacts"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own)."""
    return Settings()
