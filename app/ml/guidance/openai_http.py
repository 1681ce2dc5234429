"""The HTTP backend: any server speaking the OpenAI /chat/completions API, plain or streamed."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

from app.ml.guidance.prompt import build_messages, result_from_text
from app.ml.guidance.types import GeneratorError, GuidanceRequest, GuidanceResult


class OpenAICompatibleGenerator:
    """Any server speaking POST {base_url}/chat/completions (vLLM, llama.cpp, Ollama, OpenAI ...).

    Args:
        base_url: e.g. "http://llm:8000/v1".
        model: model name sent in the request.
        api_key: sent as a Bearer token when given.
        timeout_s: HTTP timeout (connect/read).
        vision: also send the inspected image as an OpenAI ``image_url`` data-URL content part.
        max_tokens / temperature: generation settings.
        name: backend name (default "openai:<model>").
        extra_body: more fields for the request body, e.g. llama.cpp's ``grammar`` or vLLM's
            ``guided_regex`` to hold a small model to the four-section format.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        vision: bool = False,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.2,
        name: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.extra_body = dict(extra_body or {})
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.vision = vision
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.name = name or f"openai:{model}"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def payload(self, request: GuidanceRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body sent to /chat/completions."""
        messages: list[dict[str, Any]] = [dict(m) for m in build_messages(request)]
        if self.vision and request.image_png:
            url = "data:image/png;base64," + base64.b64encode(request.image_png).decode("ascii")
            messages[-1]["content"] = [
                {"type": "text", "text": messages[-1]["content"]},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
            **self.extra_body,
        }

    def generate(self, request: GuidanceRequest) -> GuidanceResult:
        """One non-streaming completion, parsed (raises GeneratorError on any failure)."""
        import httpx

        t0 = time.perf_counter()
        try:
            with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client:
                resp = client.post(
                    f"{self.base_url}/chat/completions", json=self.payload(request), headers=self._headers()
                )
        except httpx.TimeoutException as exc:
            raise GeneratorError("timeout", f"no answer within {self.timeout_s:.0f}s") from exc
        except httpx.HTTPError as exc:
            raise GeneratorError("unavailable", f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise GeneratorError("http_error", f"HTTP {resp.status_code}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GeneratorError("bad_response", "no choices[0].message.content") from exc
        if not isinstance(content, str):
            raise GeneratorError("bad_response", "content is not text")
        return result_from_text(
            content, request, generator=self.name, elapsed_ms=int((time.perf_counter() - t0) * 1000)
        )

    def stream(self, request: GuidanceRequest) -> Iterator[str]:
        """Yield content deltas from a server-sent-events completion."""
        import httpx

        try:
            with (
                httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client,
                client.stream(
                    "POST",
                    f"{self.base_url}/chat/completions",
                    json=self.payload(request, stream=True),
                    headers=self._headers(),
                ) as resp,
            ):
                if resp.status_code >= 400:
                    raise GeneratorError("http_error", f"HTTP {resp.status_code}")
                is_done = False
                pieces: list[str] = []
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        is_done = True
                        break
                    try:
                        delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    except (ValueError, KeyError, IndexError, AttributeError):
                        continue
                    if isinstance(delta, str) and delta:
                        pieces.append(delta)
                        yield delta
                if not is_done:
                    # A server that dies between two events closes the stream cleanly: the answer is cut.
                    raise GeneratorError("unavailable", "stream ended before [DONE]", "".join(pieces))
        except httpx.TimeoutException as exc:
            raise GeneratorError("timeout", f"stream stalled for {self.timeout_s:.0f}s") from exc
        except httpx.HTTPError as exc:
            raise GeneratorError("unavailable", f"{type(exc).__name__}: {exc}") from exc
