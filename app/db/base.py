"""Declarative base with one naming convention, and column types shared by SQLite and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String, TypeDecorator, text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    """Base class of every ORM table."""

    metadata = metadata


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def db_now(session: Session) -> datetime:
    """The database server's current time (UTC): one clock for every host that shares the database.

    Leases and job heartbeats compare times that different hosts wrote; their own clocks may disagree by more
    than a heartbeat, and a lease would then look expired to one host while its holder is alive on another.
    MariaDB answers ``UTC_TIMESTAMP(6)``; SQLite is a file on one host, whose clock is the database's.
    """
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        value = session.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC)
    return utcnow()


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite and MariaDB keep no zone) and always returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def object_key_type(length: int = 512) -> Any:
    """A string column compared byte for byte (object keys are case-sensitive)."""
    return String(length).with_variant(mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")
