"""Inference runtimes for exported networks: ONNX Runtime and OpenVINO beside eager PyTorch.

A network (the search embedder, PatchCore's feature extractor) is exported once to ONNX with a dynamic
batch axis and run by the runtime the ``INFERENCE_RUNTIME`` setting names:

* ``torch``: the PyTorch module as it is (the reference every other runtime is compared with);
* ``onnx``: ONNX Runtime; on a CUDA device the TensorRT execution provider when installed, else CUDA;
* ``openvino``: OpenVINO on the CPU (forced to fp32: its CPU plugin would otherwise pick bf16 where the
  processor has it, and scores would drift);
* ``auto``: the fastest of the installed runtimes whose scores passed the parity check.

Parity is the guarantee, not a hope: an engine compares a runtime's scores with PyTorch's on real images
before it uses it (``ParityCheck``), and a runtime that differs by more than ``PARITY_RTOL`` relative is
refused and PyTorch is used instead. fp16 is tried only on a CUDA device and kept only where it passes.

Thread safety: ``CompiledNet.run`` may be called from several threads (ONNX Runtime sessions are
thread-safe; OpenVINO gets one infer request per thread).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

TORCH = "torch"
ONNX = "onnx"
OPENVINO = "openvino"
AUTO = "auto"
RUNTIMES = (TORCH, ONNX, OPENVINO)
RUNTIME_SETTINGS = (AUTO, *RUNTIMES)
FP32 = "fp32"
FP16 = "fp16"
# Scores and anomaly maps of a runtime must equal PyTorch's within this relative difference.
PARITY_RTOL = 1e-4
_OPSET = 17
_INPUT = "images"

# Reasons are translation keys (area "runtime"); the engines never build sentences.
REASON_PARITY = "runtime.refused.parity"
REASON_VERDICT = "runtime.refused.verdict"
REASON_UNAVAILABLE = "runtime.refused.unavailable"
REASON_EXPORT = "runtime.refused.export"


class RuntimeUnavailableError(Exception):
    """A runtime is not installed or cannot run the exported network on this device."""


def installed_runtimes() -> list[str]:
    """Runtimes importable in this environment (``torch`` always)."""
    found = [TORCH]
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append(ONNX)
    if importlib.util.find_spec("openvino") is not None:
        found.append(OPENVINO)
    return found


def check_setting(value: str) -> str:
    """The setting value, validated (``auto``, ``torch``, ``onnx`` or ``openvino``)."""
    if value not in RUNTIME_SETTINGS:
        raise ValueError(f"INFERENCE_RUNTIME must be one of {RUNTIME_SETTINGS}, got {value!r}")
    return value


def candidates(requested: str, device: str) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to check for a setting, PyTorch excluded, most wanted first.

    fp16 only on CUDA (CPU fp16 is slow and never within parity); OpenVINO only on the CPU (its GPU plugin
    is for Intel GPUs).
    """
    check_setting(requested)
    if requested == TORCH:
        return []
    names = [requested] if requested != AUTO else [ONNX, OPENVINO]
    cuda = torch.device(device).type == "cuda"
    out: list[tuple[str, str]] = []
    for name in names:
        if name == OPENVINO and cuda:
            continue
        if cuda:
            out.append((name, FP16))
        out.append((name, FP32))
    return out


def export_onnx(module: nn.Module, example: torch.Tensor, output_names: Sequence[str]) -> bytes:
    """The ONNX bytes of ``module`` traced on ``example`` (batch axis dynamic, other axes as in the example).

    Raises:
        RuntimeUnavailableError: The module cannot be exported.
    """
    axes = {_INPUT: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="defectlens-export-") as folder,
            torch.inference_mode(False),
            torch.no_grad(),
            warnings.catch_warnings(),
        ):
            # Tracing warns about shapes turned into constants: intended, the spatial size is fixed.
            warnings.simplefilter("ignore")
            target = Path(folder) / "net.onnx"
            torch.onnx.export(
                module.eval(),
                (example,),
                str(target),
                input_names=[_INPUT],
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=_OPSET,
                dynamo=False,
            )
            return target.read_bytes()
    except Exception as exc:  # any exporter failure means: this network stays on PyTorch
        raise RuntimeUnavailableError(f"ONNX export failed: {exc}") from exc


class _Threads:
    """Threads one call of a compiled network runs on (INFERENCE_THREADS, set once per process by the entry
    point, like torch's own intra-op count); 0 until set: torch's count."""

    count = 0


def set_threads(count: int) -> None:
    """Threads per call for every network compiled from now on (ONNX Runtime intra-op threads, OpenVINO
    threads per stream)."""
    _Threads.count = max(1, count)


def threads() -> int:
    """Threads per call a network compiled now gets."""
    return _Threads.count or max(1, torch.get_num_threads())


class CompiledNet:
    """One exported network run by ONNX Runtime or OpenVINO: float32 array in, float32 arrays out.

    Args:
        runtime: ``onnx`` or ``openvino``.
        precision: ``fp32`` or ``fp16`` (input and outputs stay float32 for the caller).
        device: Torch-style device string the network runs on.
        run_fn: Callable running one batch.
        detail: Execution provider or plugin actually used (shown on status pages).
        threads: CPU threads one call runs on, as the runtime reports its compiled session.
    """

    def __init__(
        self,
        runtime: str,
        precision: str,
        device: str,
        run_fn: Callable[[np.ndarray], list[np.ndarray]],
        detail: str,
        threads: int = 1,
    ) -> None:
        self.runtime = runtime
        self.precision = precision
        self.device = device
        self.detail = detail
        self.threads = threads
        self._run = run_fn

    @classmethod
    def load(
        cls,
        onnx_bytes: bytes,
        runtime: str,
        *,
        device: str = "cpu",
        precision: str = FP32,
        cache_dir: Path | None = None,
    ) -> CompiledNet:
        """Compile ONNX bytes for a runtime.

        Args:
            onnx_bytes: The exported network (``export_onnx``).
            runtime: ``onnx`` or ``openvino``.
            device: ``cpu`` or a CUDA device string.
            precision: ``fp32``, or ``fp16`` on CUDA.
            cache_dir: Where TensorRT may keep its engine cache (optional).

        Returns:
            The compiled network.

        Raises:
            RuntimeUnavailableError: Runtime missing, device unsupported, or compilation failed.
        """
        if runtime not in (ONNX, OPENVINO):
            raise RuntimeUnavailableError(f"unknown runtime {runtime!r}")
        cuda = torch.device(device).type == "cuda"
        if precision == FP16 and not cuda:
            raise RuntimeUnavailableError("fp16 is used on CUDA devices only")
        try:
            if runtime == ONNX:
                return cls._load_onnxruntime(onnx_bytes, device, precision, cache_dir)
            if cuda:
                raise RuntimeUnavailableError("OpenVINO runs on the CPU here; the device is CUDA")
            return cls._load_openvino(onnx_bytes, device)
        except RuntimeUnavailableError:
            raise
        except Exception as exc:  # the runtime's own errors (missing ops, bad providers) mean: not usable
            raise RuntimeUnavailableError(f"{runtime} cannot run the network: {exc}") from exc

    @classmethod
    def _load_onnxruntime(
        cls, onnx_bytes: bytes, device: str, precision: str, cache_dir: Path | None
    ) -> CompiledNet:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailableError("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting worker threads: on a shared 2-core server they take CPU from other requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        cuda = torch.device(device).type == "cuda"
        if cuda:
            available = set(ort.get_available_providers())
            index = torch.device(device).index or 0
            if "TensorrtExecutionProvider" in available:
                trt: dict[str, Any] = {"device_id": index, "trt_fp16_enable": precision == FP16}
                if cache_dir is not None:
                    trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
                providers = [
                    ("TensorrtExecutionProvider", trt),
                    ("CUDAExecutionProvider", {"device_id": index}),
                ]
            elif "CUDAExecutionProvider" in available:
                if precision == FP16:
                    # Without TensorRT, fp16 needs a half-precision graph; the CUDA provider runs fp32 as is.
                    raise RuntimeUnavailableError("fp16 needs the TensorRT execution provider")
                providers = [("CUDAExecutionProvider", {"device_id": index})]
            else:
                raise RuntimeUnavailableError("onnxruntime has no CUDA execution provider (onnxruntime-gpu)")
            providers.append("CPUExecutionProvider")
        session = ort.InferenceSession(onnx_bytes, options, providers=providers)
        used = session.get_providers()[0]
        if cuda and used == "CPUExecutionProvider":
            raise RuntimeUnavailableError("onnxruntime fell back to the CPU provider on a CUDA device")
        if precision == FP16 and used != "TensorrtExecutionProvider":
            # onnxruntime-gpu lists TensorRT even without its libraries, then falls back to CUDA in fp32.
            raise RuntimeUnavailableError(f"fp16 needs TensorRT; the session runs on {used}")

        def run(batch: np.ndarray) -> list[np.ndarray]:
            outs = session.run(None, {_INPUT: np.ascontiguousarray(batch, dtype=np.float32)})
            return [np.asarray(o, dtype=np.float32) for o in outs]

        return cls(ONNX, precision, device, run, used, session.get_session_options().intra_op_num_threads)

    @classmethod
    def _load_openvino(cls, onnx_bytes: bytes, device: str) -> CompiledNet:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailableError("openvino is not installed") from exc
        core = ov.Core()
        model = core.read_model(model=onnx_bytes)
        # One stream serialises every request; one stream per request the CPU can run at once lets
        # concurrent requests run side by side, each on the threads one request gets (ONNX Runtime sessions
        # run concurrent calls in parallel by themselves).
        per_call = threads()
        streams = max(1, min(4, (os.cpu_count() or 1) // per_call))
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": streams * per_call,
                "NUM_STREAMS": streams,
                "PERFORMANCE_HINT": "LATENCY",
                # The CPU plugin would pick bf16 on processors that have it: scores would drift.
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        local = threading.local()

        def run(batch: np.ndarray) -> list[np.ndarray]:
            request = getattr(local, "request", None)
            if request is None:
                request = local.request = compiled.create_infer_request()
            results = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
            # The request reuses its output buffers: copy before another call overwrites them.
            return [np.array(results[out], dtype=np.float32) for out in compiled.outputs]

        used = int(compiled.get_property("INFERENCE_NUM_THREADS")) // max(
            1, int(compiled.get_property("NUM_STREAMS"))
        )
        return cls(OPENVINO, FP32, device, run, "CPU", used)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs of the network for a float32 batch (N, ...)."""
        return self._run(batch)

    def describe(self) -> str:
        """Runtime, precision and provider, e.g. ``onnx fp32 CPUExecutionProvider``."""
        return f"{self.runtime} {self.precision} {self.detail}"


@dataclass(frozen=True)
class ParityCheck:
    """One runtime compared with PyTorch on the same images.

    Args:
        runtime: ``onnx`` or ``openvino``.
        precision: ``fp32`` or ``fp16``.
        device: Device type the check ran on (``cpu``, ``cuda``); parity is not assumed across devices.
        passed: Whether the runtime may be used.
        n_images: Images compared.
        max_score_rel: Largest relative difference of an image score (None when it could not run).
        max_map_rel: Largest difference of an anomaly map (or embedding), relative to the map's maximum.
        verdict_flips: Images whose verdict (score above the threshold) changed.
        ms_per_image: Time per image with this runtime on the check images.
        reason: Translation key of why it was refused (None when it passed).
        params: Parameters of that key.
    """

    runtime: str
    precision: str
    device: str
    passed: bool
    n_images: int
    max_score_rel: float | None = None
    max_map_rel: float | None = None
    verdict_flips: int = 0
    ms_per_image: float | None = None
    reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityCheck:
        """Build from ``to_dict`` output."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime an engine runs on, and the checks that decided it.

    Args:
        requested: The setting (``auto``, ``torch``, ``onnx``, ``openvino``).
        runtime: The runtime chosen (``torch`` when every other one was refused or none was asked for).
        precision: Its precision.
        device: Device type the checks ran on.
        torch_ms_per_image: PyTorch's time per image on the check images.
        checks: Every runtime checked.
        reason: Translation key when the requested runtime was refused (then ``runtime`` is ``torch``).
        params: Parameters of that key.
    """

    requested: str
    runtime: str
    precision: str
    device: str
    torch_ms_per_image: float | None = None
    checks: tuple[ParityCheck, ...] = ()
    reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def fell_back(self) -> bool:
        """Whether a runtime other than PyTorch was asked for and refused."""
        return self.reason is not None

    def check_for(self, runtime: str, precision: str) -> ParityCheck | None:
        """The check of one runtime/precision, or None."""
        return next((c for c in self.checks if c.runtime == runtime and c.precision == precision), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = asdict(self)
        data["checks"] = [c.to_dict() for c in self.checks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeChoice:
        """Build from ``to_dict`` output."""
        checks = tuple(ParityCheck.from_dict(c) for c in data.get("checks") or [])
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "checks"}
        return cls(**values, checks=checks)


def relative_difference(values: np.ndarray, reference: np.ndarray) -> float:
    """max |values - reference| / max(|reference|), 0 for equal arrays (the parity measure)."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    diff = (
        float(np.abs(values.astype(np.float64) - reference.astype(np.float64)).max()) if values.size else 0.0
    )
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def score_difference(scores: np.ndarray, reference: np.ndarray) -> float:
    """Largest per-image relative difference of scores (each score against its own magnitude)."""
    if reference.size == 0:
        return 0.0
    ref = reference.astype(np.float64)
    scale = np.maximum(np.abs(ref), 1e-12)
    return float((np.abs(scores.astype(np.float64) - ref) / scale).max())


def choose(
    requested: str,
    device: str,
    torch_ms: float | None,
    checks: Sequence[ParityCheck],
) -> RuntimeChoice:
    """The runtime to use given the checks: the requested one if it passed, else PyTorch with the reason.

    ``auto`` takes the fastest passing runtime, PyTorch included; an fp16 result is preferred only when it
    passed and is faster.
    """
    device_type = torch.device(device).type
    passed = [c for c in checks if c.passed]
    if requested == TORCH:
        return RuntimeChoice(requested, TORCH, FP32, device_type, torch_ms, tuple(checks))
    if passed:
        best = min(passed, key=lambda c: c.ms_per_image if c.ms_per_image is not None else float("inf"))
        faster = best.ms_per_image is not None and torch_ms is not None and torch_ms > best.ms_per_image
        if requested == AUTO and not faster:
            return RuntimeChoice(requested, TORCH, FP32, device_type, torch_ms, tuple(checks))
        return RuntimeChoice(requested, best.runtime, best.precision, device_type, torch_ms, tuple(checks))
    refused = [c for c in checks if c.reason is not None]
    if requested == AUTO and not refused:
        return RuntimeChoice(requested, TORCH, FP32, device_type, torch_ms, tuple(checks))
    # The fp32 check's reason explains best (an fp16 refusal is expected and not the point).
    first = next((c for c in refused if c.precision == FP32), refused[0] if refused else None)
    reason = first.reason if first is not None else REASON_UNAVAILABLE
    params = dict(first.params) if first is not None else {"runtime": requested, "error": "not installed"}
    return RuntimeChoice(requested, TORCH, FP32, device_type, torch_ms, tuple(checks), reason, params)


def refused(
    runtime: str, precision: str, device: str, n_images: int, exc: Exception, key: str
) -> ParityCheck:
    """A check for a runtime that could not run at all."""
    return ParityCheck(
        runtime,
        precision,
        torch.device(device).type,
        False,
        n_images,
        reason=key,
        params={"runtime": runtime, "precision": precision, "error": str(exc)[:300]},
    )


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """(result of the last call, best seconds of ``repeats`` calls)."""
    best = float("inf")
    result: Any = None
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return result, best


Evaluate = Callable[["CompiledNet | None"], tuple[np.ndarray, Sequence[np.ndarray]]]


def _compare(
    runtime: str,
    precision: str,
    device: str,
    reference: tuple[np.ndarray, Sequence[np.ndarray]],
    result: tuple[np.ndarray, Sequence[np.ndarray]],
    seconds: float,
    n_images: int,
    *,
    threshold: float | None,
    score_floor: float,
) -> ParityCheck:
    ref_scores, ref_maps = reference
    scores, maps = result
    ref64 = np.asarray(ref_scores, dtype=np.float64)
    scale = np.maximum(np.abs(ref64), max(score_floor, 1e-12))
    score_rel = (
        float((np.abs(np.asarray(scores, dtype=np.float64) - ref64) / scale).max()) if ref64.size else 0.0
    )
    map_rel = 0.0
    for got, want in zip(maps, ref_maps, strict=True):
        peak = max(float(np.abs(want).max()) if want.size else 0.0, score_floor, 1e-12)
        diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
        map_rel = max(map_rel, diff / peak)
    flips = 0 if threshold is None else int(((np.asarray(scores) > threshold) != (ref64 > threshold)).sum())
    passed = score_rel <= PARITY_RTOL and map_rel <= PARITY_RTOL and flips == 0
    reason = None if passed else (REASON_VERDICT if flips else REASON_PARITY)
    params: dict[str, Any] = {}
    if not passed:
        params = {
            "runtime": runtime,
            "precision": precision,
            "score_rel": f"{score_rel:.1e}",
            "map_rel": f"{map_rel:.1e}",
            "tolerance": f"{PARITY_RTOL:.0e}",
            "flips": flips,
        }
    return ParityCheck(
        runtime,
        precision,
        torch.device(device).type,
        passed,
        n_images,
        max_score_rel=score_rel,
        max_map_rel=map_rel,
        verdict_flips=flips,
        ms_per_image=round(1000.0 * seconds / n_images, 3),
        reason=reason,
        params=params,
    )


def select_runtime(
    requested: str,
    device: str,
    export: Callable[[], bytes],
    evaluate: Evaluate,
    *,
    threshold: float | None = None,
    score_floor: float = 0.0,
    cache_dir: Path | None = None,
    n_images: int | None = None,
    compile_net: Callable[[bytes, str, str], CompiledNet] | None = None,
) -> tuple[RuntimeChoice, CompiledNet | None, bytes | None]:
    """Check every candidate runtime against PyTorch on the same images and choose one.

    Args:
        requested: The setting (``auto``, ``torch``, ``onnx``, ``openvino``).
        device: Torch device string the engine runs on.
        export: Returns the network's ONNX bytes (called once, only when a runtime is to be checked).
        evaluate: Scores and maps (or embeddings) of the check images with a compiled network, or with
            PyTorch when given None.
        threshold: Decision threshold of the scores: a runtime that flips any verdict is refused.
        score_floor: Differences are relative to each score and map, but never to less than this (a score
            near zero, e.g. of a photo in the memory bank, is float noise; the threshold is the scale there).
        cache_dir: TensorRT engine cache.
        n_images: Images ``evaluate`` runs (default: one per score), for the time per image.
        compile_net: Compiles (onnx bytes, runtime, precision), e.g. through a cache of compiled networks
            (default ``CompiledNet.load``).

    Returns:
        (choice, compiled network to use or None for PyTorch, ONNX bytes to store or None).
    """
    check_setting(requested)
    todo = candidates(requested, device)
    if not todo:
        return RuntimeChoice(requested, TORCH, FP32, torch.device(device).type), None, None
    evaluate(None)  # warm-up: PyTorch traces and freezes its trunk on the first call
    reference, torch_seconds = timed(lambda: evaluate(None))
    n = max(1, n_images if n_images is not None else len(reference[0]))
    torch_ms = round(1000.0 * torch_seconds / n, 3)
    installed = installed_runtimes()
    checks: list[ParityCheck] = []
    nets: dict[tuple[str, str], CompiledNet] = {}
    onnx_bytes: bytes | None = None
    for runtime, precision in todo:
        if runtime not in installed:
            err = RuntimeUnavailableError(f"{runtime} is not installed")
            checks.append(refused(runtime, precision, device, n, err, REASON_UNAVAILABLE))
            continue
        if onnx_bytes is None:
            try:
                onnx_bytes = export()
            except RuntimeUnavailableError as exc:
                checks += [
                    refused(r, p, device, n, exc, REASON_EXPORT) for r, p in todo if (r, p) not in nets
                ]
                break
        try:
            if compile_net is not None:
                net = compile_net(onnx_bytes, runtime, precision)
            else:
                net = CompiledNet.load(
                    onnx_bytes, runtime, device=device, precision=precision, cache_dir=cache_dir
                )
            evaluate(net)  # warm-up: the runtimes allocate and tune on the first call
            result, seconds = timed(lambda net=net: evaluate(net))  # type: ignore[misc]
        except RuntimeUnavailableError as exc:
            checks.append(refused(runtime, precision, device, n, exc, REASON_UNAVAILABLE))
            continue
        except Exception as exc:  # a runtime failing on real inputs is refused like one that cannot load
            logger.warning("%s %s failed on the check images", runtime, precision, exc_info=True)
            checks.append(refused(runtime, precision, device, n, exc, REASON_UNAVAILABLE))
            continue
        check = _compare(
            runtime,
            precision,
            device,
            reference,
            result,
            seconds,
            n,
            threshold=threshold,
            score_floor=score_floor,
        )
        checks.append(check)
        if check.passed:
            nets[(runtime, precision)] = net
        else:
            logger.warning(
                "%s %s refused: scores differ by %.2e, maps by %.2e (tolerance %.0e), %d verdicts flipped",
                runtime,
                precision,
                check.max_score_rel or 0.0,
                check.max_map_rel or 0.0,
                PARITY_RTOL,
                check.verdict_flips,
            )
    choice = choose(requested, device, torch_ms, checks)
    chosen = nets.get((choice.runtime, choice.precision))
    # Kept whenever some runtime passed, so switching the setting to it later needs no rebuild.
    return choice, chosen, onnx_bytes if nets else None


def stored_check(choice: RuntimeChoice | None, requested: str, device: str) -> ParityCheck | None:
    """The passed check a loaded engine may run on for this setting and device, or None for PyTorch.

    ``auto`` takes what the build chose; an explicit runtime its fastest passed check. A check made on
    another device type does not count: parity is checked where the engine runs.
    """
    check_setting(requested)
    if choice is None or requested == TORCH:
        return None
    device_type = torch.device(device).type
    if requested == AUTO:
        if choice.runtime == TORCH or choice.device != device_type:
            return None
        found = choice.check_for(choice.runtime, choice.precision)
        return found if found is not None and found.passed else None
    passed = [c for c in choice.checks if c.runtime == requested and c.passed and c.device == device_type]
    return min(passed, key=lambda c: c.ms_per_image or 0.0) if passed else None
