"""Auth request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoginRequest(BaseModel):
    """Credentials for `POST /api/v1/auth/login`."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class UserRead(BaseModel):
    """A user as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: str
    display_name: str = ""
    is_active: bool = True
    created_at: datetime | None = None
    last_login_at: datetime | None = None


class LoginResponse(BaseModel):
    """A bearer token for scripts (the browser also gets a cookie)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: datetime
    user: UserRead


class UserCreate(BaseModel):
    """A new user (admin only)."""

    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=1, max_length=256)
    role: Literal["worker", "admin"] = "worker"
    display_name: str = Field(default="", max_length=128)


class UserUpdate(BaseModel):
    """Changes to a user (admin only): role, active flag, display name, or a new password."""

    role: Literal["worker", "admin"] | None = None
    is_active: bool | None = None
    display_name: str | None = Field(default=None, max_length=128)
    password: str | None = Field(default=None, min_length=1, max_length=256)
