"""Which backends this server can run (and why not, as translation keys), and creating one by name."""

from __future__ import annotations

from pathlib import Path

from app.core.reasons import Reason
from app.core.security import redact_url
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.local_llm import LLM_PRESETS, TransformersGenerator, has_weights, llm_dir
from app.ml.guidance.openai_http import OpenAICompatibleGenerator
from app.ml.guidance.types import Generator, GeneratorInfo


def available_generators(
    models_dir: Path,
    *,
    openai_base_url: str | None = None,
    openai_model: str | None = None,
    openai_vision: bool = False,
    device: str = "cpu",
) -> list[GeneratorInfo]:
    """List every backend with whether it can run here and why not.

    Args:
        models_dir: root with ``llm/<model dir>/`` subfolders.
        openai_base_url / openai_model: OpenAI-compatible endpoint settings (not probed here).
        openai_vision: whether that endpoint accepts images.
        device: where local models would run (CPU is flagged as slow).

    Returns:
        Infos; "extractive" is always first and available.
    """
    infos = [
        GeneratorInfo(
            "extractive",
            Reason("guidance.generator_label.extractive"),
            "extractive",
            True,
            Reason("guidance.reason.always"),
        )
    ]
    known: set[str] = set()
    for preset in LLM_PRESETS.values():
        path = llm_dir(models_dir, preset)
        known.add(path.name)
        label = Reason.plain(preset.label)
        if not has_weights(path):
            reason = Reason("guidance.reason.no_weights", {"path": str(path)})
            infos.append(GeneratorInfo(preset.key, label, "transformers", False, reason, path))
            continue
        if preset.trust_remote_code and not any(path.glob("modeling_*.py")):
            reason = Reason("engines.generator.no_remote_code", {"path": str(path)})
            infos.append(GeneratorInfo(preset.key, label, "transformers", False, reason, path))
            continue
        ready = "guidance.reason.local_ready" if device.startswith("cuda") else "guidance.reason.local_cpu"
        infos.append(GeneratorInfo(preset.key, label, "transformers", True, Reason(ready), path))
    llm_root = models_dir / "llm"
    if llm_root.is_dir():
        for path in sorted(p for p in llm_root.iterdir() if p.is_dir() and p.name not in known):
            ok = has_weights(path)
            reason = Reason("engines.generator.local_weights" if ok else "engines.generator.no_config")
            infos.append(
                GeneratorInfo(f"local:{path.name}", Reason.plain(path.name), "transformers", ok, reason, path)
            )
    if openai_base_url and openai_model:
        key = "openai_vision" if openai_vision else "openai"
        label = Reason(f"guidance.generator_label.{key}", {"model": openai_model})
        # The reason is shown on settings pages: never the credentials a base URL may carry.
        reason = Reason("guidance.reason.openai_ready", {"url": redact_url(openai_base_url)})
        infos.append(GeneratorInfo(f"openai:{openai_model}", label, "openai", True, reason))
    else:
        infos.append(
            GeneratorInfo(
                "openai",
                Reason("guidance.generator_label.openai_unset"),
                "openai",
                False,
                Reason("guidance.reason.openai_not_configured"),
            )
        )
    return infos


def create_generator(
    name: str,
    models_dir: Path,
    *,
    device: str = "cpu",
    timeout_s: float = 120.0,
    max_new_tokens: int = 768,
    openai_base_url: str | None = None,
    openai_model: str | None = None,
    openai_api_key: str | None = None,
    openai_vision: bool = False,
) -> Generator:
    """Instantiate a backend by the ``name`` from :func:`available_generators`.

    Raises:
        FileNotFoundError: local weights missing.  ValueError: unknown name / missing settings.
    """
    if name == "extractive":
        return ExtractiveGenerator()
    if name.startswith("openai"):
        if not (openai_base_url and openai_model):
            raise ValueError("OpenAI-compatible backend needs base_url and model")
        return OpenAICompatibleGenerator(
            openai_base_url, openai_model, openai_api_key, timeout_s, openai_vision, max_tokens=max_new_tokens
        )
    if name in LLM_PRESETS:
        path, preset = llm_dir(models_dir, LLM_PRESETS[name]), name
    elif name.startswith("local:"):
        path, preset = models_dir / "llm" / name.split(":", 1)[1], None
    else:
        raise ValueError(f"unknown generator {name!r}")
    if not has_weights(path):
        raise FileNotFoundError(f"model weights not found in {path}")
    return TransformersGenerator.load(
        path, device, preset, max_new_tokens=max_new_tokens, timeout_s=timeout_s
    )
