"""Column types shared by every slice (use them through the ``Annotated`` aliases)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from sqlalchemy import JSON, DateTime, Dialect, String, Text, TypeDecorator, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC and
    made aware again on the way out. Naive datetimes are refused on the way in: they are always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class OwnJSON(TypeDecorator[Any]):
    """JSON that a query builds from Foxguard's own columns (the feature probe's rows), parsed with orjson.

    Not for documents a client sent: orjson reads an integer beyond 64 bits as a float, where the
    tables' JSON columns (``json.loads``) keep it exact. On PostgreSQL these values have the type ``json``
    (the tables use ``jsonb``) and the driver has parsed them already (``security.db`` registers orjson
    for ``json`` only); SQLite returns them as text, parsed here.
    """

    impl = Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "sqlite" and isinstance(value, str):
            return orjson.loads(value)
        return value


# Annotated aliases: ``created_at: Mapped[Timestamp]``.
Timestamp = Annotated[datetime, mapped_column(UTCDateTime())]
JSONDict = Annotated[dict[str, Any], mapped_column(JSONType)]
JSONList = Annotated[list[Any], mapped_column(JSONType)]
UUIDPk = Annotated[uuid.UUID, mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)]
AccountId = Annotated[str, mapped_column(String(64))]

# The wallet's account identifiers: opaque, URL-safe, at most 64 characters.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
