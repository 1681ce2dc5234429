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
    """Give each running step `threads` CPU threads (0: the CPU's cores shared by `running` steps at once):
    torch's intra-op threads, and the ONNX Runtime / OpenVINO sessions compiled from now on.

    Several steps run at once on the server, each on its own request thread: more intra-op threads than
    cores per step only make them wait for each other (docs/benchmarks/throughput.md has the measurements).
    Returns the thread count set.
    """
    import torch

    from app.ml import inference_runtime

    count = threads or max(1, (os.cpu_count() or 1) // max(1, running))
    torch.set_num_threads(count)
    inference_runtime.set_threads(count)
    logger.info("inference threads per running step: %d", count)
    return count


def apply_inference_threads(settings: Settings) -> int:
    """INFERENCE_THREADS for a process without the server's gates (a job worker, the CLI): the count the
    server gives a step, so a build times and checks the runtimes as they will serve."""
    from app.core.inference import InferenceGates

    return set_inference_threads(
        settings.inference_threads, running=InferenceGates.from_settings(settings).running_max
    )


def batch_policy(settings: Settings, device: str) -> BatchPolicy:
    """BATCH_WAIT_MS / BATCH_MAX as a policy; BATCH_MAX 0 is 1 (off) on the CPU and 8 on a GPU."""
    size = settings.batch_max or (8 if device != "cpu" else 1)
    return BatchPolicy(wait_s=settings.batch_wait_ms / 1000.0, max_batch=size)
