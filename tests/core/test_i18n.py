"""Every user-facing string has a Korean and an English text."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.i18n import all_keys, translate

ROOT = Path(__file__).resolve().parents[2]
# t('key') in templates; translate("key") and DomainError("errors.key") style calls in Python.
_TEMPLATE_KEY = re.compile(r"""\bt\(\s*['"]([a-z0-9_.]+)['"]\s*(~?)""")
_PY_KEY = re.compile(r"""(?:translate|Error)\(\s*["']((?:errors|[a-z_]+)\.[a-z0-9_.]+)["']""")


def test_korean_and_english_have_the_same_keys() -> None:
    ko, en = all_keys("ko"), all_keys("en")
    assert sorted(ko - en) == [], "missing in English"
    assert sorted(en - ko) == [], "missing in Korean"


def test_every_literal_key_used_in_templates_and_code_exists() -> None:
    known = all_keys("ko")
    used: dict[str, str] = {}
    for path in (ROOT / "templates").rglob("*.html"):
        for key, joined in _TEMPLATE_KEY.findall(path.read_text(encoding="utf-8")):
            if not joined:  # t('prefix.' ~ value) is completed at run time
                used.setdefault(key, str(path.relative_to(ROOT)))
    for path in (ROOT / "app").rglob("*.py"):
        for key in _PY_KEY.findall(path.read_text(encoding="utf-8")):
            used.setdefault(key, str(path.relative_to(ROOT)))
    missing = {key: where for key, where in used.items() if key not in known}
    assert missing == {}


def test_korean_is_the_default_and_english_is_available() -> None:
    assert translate("errors.not_found", "ko") != translate("errors.not_found", "en")
    assert translate("errors.not_found", "xx") == translate("errors.not_found", "ko")
