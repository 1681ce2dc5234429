"""What the engines need around them: directories, CPU threads, the batching policy; the engines themselves
are loaded by app.deployments.jobs.load_artifacts."""

from __future__ import annotations

import logging
import os

from app.core.config import Settings
from app.ml.batching import BatchPolicy

logger = logging.getLogger(__name__)


def prepare_directories(settings: Settings) -> None:
    """Create the models and artifacts directories (weights are never downloaded)."""
    settings.models_path.mkdir(parents=True, exist_ok=True)
    settings.artifacts_path.mkdir(parents=True, exist_ok=True)
    logger.info("models directory: %s", settings.models_path)


def set_inference_threads(threads: int, *, running: int) -> int:
    """Give torch `threads` intra-op threads (0: the CPU's cores shared by `running` steps at once).

    Several steps run at once on the server, each on its own request thread: more intra-op threads than
    cores per step only make them wait for each other (docs/benchmarks/throughput.md has the measurements).
    Returns the thread count set.
    """
    import torch

    count = threads or max(1, (os.cpu_count() or 1) // max(1, running))
    torch.set_num_threads(count)
    logger.info("torch intra-op threads: %d", count)
    return count


def batch_policy(settings: Settings, device: str) -> BatchPolicy:
    """BATCH_WAIT_MS / BATCH_MAX as a policy; BATCH_MAX 0 is 1 (off) on the CPU and 8 on a GPU."""
    size = settings.batch_max or (8 if device != "cpu" else 1)
    return BatchPolicy(wait_s=settings.batch_wait_ms / 1000.0, max_batch=size)
