"""Jinja2 pages: autoescaped templates with the translator, the user and the CSRF token in context."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.core.artifacts import DEPLOY_LINKS, DEPLOYMENT_KINDS
from app.core.config import BASE_DIR
from app.core.i18n import LANGUAGES, current_language, translate

templates = Jinja2Templates(directory=str(BASE_DIR / "templates"))
templates.env.autoescape = True


def _format_dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return value.astimezone().strftime(fmt) if value else "-"


templates.env.filters["dt"] = _format_dt
# The one table of deployment kinds (kind, deploy screen, menu label): templates keep no copy of it.
templates.env.globals["deployment_kinds"] = DEPLOYMENT_KINDS
templates.env.globals["deploy_links"] = DEPLOY_LINKS
templates.env.globals["deploy_nav"] = [(f"deploy_{k.slug}", k.deploy_link) for k in DEPLOYMENT_KINDS]


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render a page template with the shared context."""
    lang = current_language.get()
    ctx: dict[str, Any] = {
        "t": partial(translate, lang=lang),
        "lang": lang,
        "languages": LANGUAGES,
        "user": getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "request_path": request.url.path,
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
