"""Inspection history API: list with filters, statistics."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.auth.dependencies import get_current_user

# Authentication runs first for every route here, before any load-or-404 dependency.
router = APIRouter(prefix="/api/v1", tags=["history"], dependencies=[Depends(get_current_user)])
