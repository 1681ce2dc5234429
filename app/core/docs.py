"""API docs (Swagger UI and ReDoc) from an installed package's assets: no CDN, so air-gapped sites work.

The pages carry no inline script (the Content-Security-Policy allows none): Swagger UI starts from
`static/js/swagger-init.js`, ReDoc from its `<redoc>` element.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DefectLens API - Swagger UI</title>
<link rel="stylesheet" href="/docs-assets/swagger-ui.css">
<link rel="icon" href="/docs-assets/favicon.png"></head>
<body><div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="/docs-assets/swagger-ui-bundle.js"></script>
<script src="/static/js/swagger-init.js"></script></body></html>
"""

_REDOC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DefectLens API - ReDoc</title>
<link rel="icon" href="/docs-assets/favicon.png"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="/docs-assets/redoc.standalone.js"></script></body></html>
"""


def docs_assets_dir() -> Path:
    """The folder of Swagger UI and ReDoc files inside the installed `fastapi-offline` package."""
    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """Swagger UI for the REST API."""
    return HTMLResponse(_SWAGGER_PAGE)


@router.get("/redoc")
def redoc() -> HTMLResponse:
    """ReDoc for the REST API."""
    return HTMLResponse(_REDOC_PAGE)
