"""Guidance generation, one file per role: the shared contract (types), the prompt and its parser, the
extractive, local-model and OpenAI-compatible backends, one fallback for plain and streamed answers, and
the factory that lists and creates backends by name."""
