"""Translations: Korean by default, English available. Every user-facing string goes through `translate`."""

from __future__ import annotations

import json
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection

from app.core.reasons import Reason

LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "ko"
LANG_COOKIE = "dl_lang"
_LOCALES_DIR = Path(__file__).parent / "locales"

current_language: ContextVar[str] = ContextVar("current_language", default=DEFAULT_LANGUAGE)


@lru_cache
def _catalog(lang: str) -> dict[str, str]:
    """`{lang}.json` plus every area file `{lang}.<area>.json`; a key defined twice is an error."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any, source: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value, source)
        else:
            if prefix in flat:
                raise ValueError(f"translation key {prefix!r} is defined twice (again in {source})")
            flat[prefix] = str(node)

    files = [_LOCALES_DIR / f"{lang}.json", *sorted(_LOCALES_DIR.glob(f"{lang}.*.json"))]
    for path in files:
        walk("", json.loads(path.read_text(encoding="utf-8")), path.name)
    return flat


def translate(key: str, lang: str | None = None, **params: Any) -> str:
    """The text for `key` in `lang` (falls back to Korean, then to the key itself)."""
    lang = lang or current_language.get()
    text = _catalog(lang if lang in LANGUAGES else DEFAULT_LANGUAGE).get(key)
    if text is None:
        text = _catalog(DEFAULT_LANGUAGE).get(key, key)
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text


def all_keys(lang: str) -> set[str]:
    """Every key of one catalog (used by the completeness test)."""
    return set(_catalog(lang))


def negotiate_language(conn: HTTPConnection, default: str = DEFAULT_LANGUAGE) -> str:
    """The language of a request: `?lang=`, then the cookie, then Accept-Language, then the default."""
    candidates = [conn.query_params.get("lang"), conn.cookies.get(LANG_COOKIE)]
    for candidate in candidates:
        if candidate in LANGUAGES:
            return candidate
    accept = conn.headers.get("accept-language", "")
    for part in accept.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return default


def translate_reason(reason: Reason, lang: str | None = None) -> str:
    """A key-and-parameters reason (app.core.reasons) in `lang`."""
    return translate(reason.key, lang, **reason.params)
