"""The local backend: an instruction model from models/llm/ run by transformers (never downloads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.ml.guidance.prompt import build_messages, result_from_text
from app.ml.guidance.types import GeneratorError, GuidanceRequest, GuidanceResult


@dataclass(frozen=True)
class LlmPreset:
    """Known local instruction models (directory names under models_dir/llm/)."""

    key: str
    label: str
    dir_names: tuple[str, ...]
    trust_remote_code: bool = False
    repetition_penalty: float = 1.05


LLM_PRESETS: dict[str, LlmPreset] = {
    "hyperclovax-seed-1.5b": LlmPreset(
        "hyperclovax-seed-1.5b",
        "HyperCLOVA X SEED Text Instruct 1.5B",
        ("HyperCLOVAX-SEED-Text-Instruct-1.5B", "hyperclovax-seed-text-instruct-1.5b"),
    ),
    # EXAONE 3.5 ships its own modeling code: trust_remote_code=True executes Python from the model
    # directory, so only install EXAONE weights from a source you trust (files stay local).
    "exaone-3.5-2.4b": LlmPreset(
        "exaone-3.5-2.4b",
        "EXAONE 3.5 2.4B Instruct",
        ("EXAONE-3.5-2.4B-Instruct", "exaone-3.5-2.4b-instruct"),
        trust_remote_code=True,
        repetition_penalty=1.0,
    ),
}


def preset_for(model_dir: Path, preset: str | None) -> LlmPreset:
    """The named preset, else the one whose folder name matches, else a generic one."""
    if preset is not None:
        return LLM_PRESETS[preset]
    for p in LLM_PRESETS.values():
        if model_dir.name.lower() in (d.lower() for d in p.dir_names):
            return p
    return LlmPreset(f"local:{model_dir.name}", model_dir.name, (model_dir.name,))


class TransformersGenerator:
    """A local causal LM via transformers (never downloads: ``local_files_only=True``).

    Args:
        model / tokenizer: loaded transformers objects.
        name: backend name (preset key).
        device: "cpu" / "cuda".
        max_new_tokens: generation budget.
        timeout_s: wall-time limit enforced by a StoppingCriteria (a timed-out answer is a failure).
        repetition_penalty: from the preset.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        device: str = "cpu",
        max_new_tokens: int = 768,
        timeout_s: float = 120.0,
        repetition_penalty: float = 1.05,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._lock = threading.Lock()  # one generate() at a time per model
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        self.repetition_penalty = repetition_penalty

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: str = "cpu",
        preset: str | None = None,
        *,
        max_new_tokens: int = 768,
        timeout_s: float = 120.0,
    ) -> TransformersGenerator:
        """Load a local model directory.

        Args:
            model_dir: directory with config.json, weights and tokenizer files, or with one GGUF file.
            device: "cpu" or "cuda" (fp16 on CUDA; T4 has no bf16), float32 on CPU.
            preset: a key of LLM_PRESETS, or None to match by directory name (else generic).
            max_new_tokens: generation budget.
            timeout_s: wall-time limit per answer.

        Returns:
            A ready generator.
        """
        import torch

        from app.ml.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = preset_for(model_dir, preset)
        # A folder holding one GGUF file (no config.json) is dequantised by transformers (needs `gguf`).
        gguf = gguf_file(model_dir)
        extra: dict[str, Any] = {"gguf_file": gguf.name} if gguf is not None else {}
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=p.trust_remote_code, **extra
        )
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(model_dir), local_files_only=True, dtype=dtype, trust_remote_code=p.trust_remote_code, **extra
        )
        model.eval().to(device)
        return cls(
            model,
            tokenizer,
            name=p.key,
            device=device,
            max_new_tokens=max_new_tokens,
            timeout_s=timeout_s,
            repetition_penalty=p.repetition_penalty,
        )

    def _inputs(self, request: GuidanceRequest) -> dict[str, Any]:
        messages = build_messages(request)
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:
            prompt = f"{messages[0]['content']}\n\n{messages[1]['content']}\n\n답변:\n"
            enc = tok(prompt, return_tensors="pt")
        return {k: v.to(self._device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _gen_kwargs(self, inputs: dict[str, Any], deadline: _Deadline) -> dict[str, Any]:
        from app.ml.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision
        from transformers import StoppingCriteriaList

        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return {
            **inputs,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
            "repetition_penalty": self.repetition_penalty,
            "pad_token_id": pad,
            "stopping_criteria": StoppingCriteriaList([deadline]),
        }

    def generate(self, request: GuidanceRequest) -> GuidanceResult:
        """Greedy generation, then parsing (raises GeneratorError on timeout / unparseable output)."""
        import torch

        t0 = time.perf_counter()
        with self._lock:
            inputs = self._inputs(request)
            deadline = _Deadline(self.timeout_s)
            with torch.inference_mode():
                out = self._model.generate(**self._gen_kwargs(inputs, deadline))
        n_prompt = int(inputs["input_ids"].shape[1])
        text = str(self._tokenizer.decode(out[0, n_prompt:], skip_special_tokens=True))
        if deadline.hit:
            raise GeneratorError("timeout", f"exceeded {self.timeout_s:.0f}s", raw_text=text)
        return result_from_text(
            text, request, generator=self.name, elapsed_ms=int((time.perf_counter() - t0) * 1000)
        )

    def stream(self, request: GuidanceRequest) -> Iterator[str]:
        """Yield text pieces as they are generated (parse the joined text with result_from_text)."""
        from app.ml.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.timeout_s
        )
        inputs = self._inputs(request)
        deadline = _Deadline(self.timeout_s)
        errors: list[BaseException] = []

        def run() -> None:
            import torch

            try:
                with self._lock, torch.inference_mode():
                    self._model.generate(**self._gen_kwargs(inputs, deadline), streamer=streamer)
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        worker = threading.Thread(target=run, daemon=True, name=f"llm-stream-{self.name}")
        worker.start()
        yield from streamer
        worker.join(timeout=1.0)
        if errors:
            raise GeneratorError("error", repr(errors[0]))
        if deadline.hit:
            raise GeneratorError("timeout", f"exceeded {self.timeout_s:.0f}s")


class _Deadline:
    """StoppingCriteria-compatible wall-clock limit (transformers calls it after every token)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.hit = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if time.monotonic() > self.deadline:
            self.hit = True
        return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool, device=input_ids.device)


def gguf_file(path: Path) -> Path | None:
    """The GGUF file of a model folder without config.json (a llama.cpp-style single file), else None."""
    if (path / "config.json").is_file() or not path.is_dir():
        return None
    files = sorted(path.glob("*.gguf"))
    return files[0] if files else None


def has_weights(path: Path) -> bool:
    """Whether a model folder holds a GGUF file, or config.json with weights."""
    if gguf_file(path) is not None:
        return True
    return (path / "config.json").is_file() and any(
        any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.safetensors.index.json")
    )


def llm_dir(models_dir: Path, preset: LlmPreset) -> Path:
    """The folder of a preset under models_dir/llm/ (the first of its names when none exists)."""
    for name in preset.dir_names:
        if (models_dir / "llm" / name).is_dir():
            return models_dir / "llm" / name
    return models_dir / "llm" / preset.dir_names[0]
