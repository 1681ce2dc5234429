"""Admin catalog screens: products, defect types, images, preprocessing, model selection."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.auth.dependencies import get_current_user

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(get_current_user)])
