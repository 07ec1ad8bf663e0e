"""``security.db.DriverStatement``: hot-path statements on the driver's cursor behave as ``session.execute``.

Same values in and out (bind and result types on both databases), the statement's own values kept, pending
ORM changes flushed first, the engine's cursor listeners called, and driver errors turned into the same
SQLAlchemy exceptions (parameters hidden; a lost connection invalidated), so the error handlers, the outage
handling and statement counting work as for every other statement.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, event, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from security.config import Settings
from security.db import DriverStatement, make_engine, table_of
from security.risk.models import RiskEvent

AT = datetime(2026, 12, 3, 12, 30, 15, 123456, tzinfo=UTC)
INSERT = DriverStatement(insert(table_of(RiskEvent)))
COLUMNS = (RiskEvent.id, RiskEvent.client_id, RiskEvent.occurred_at, RiskEvent.response, RiskEvent.payload,
           RiskEvent.lat, RiskEvent.amount, RiskEvent.lat.is_not(None).label("located"))
BY_ACCOUNT = select(*COLUMNS).where(RiskEvent.account_id == bindparam("account_id")).order_by(RiskEvent.occurred_at)
FIRST_TWO = select(RiskEvent.event_id).where(RiskEvent.account_id == bindparam("account_id")).order_by(
    RiskEvent.occurred_at).limit(2)


def event_row(n: int, account_id: str = "driver-1", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {column.name: None for column in table_of(RiskEvent).columns}
    row.update(id=uuid.uuid4(), client_id=uuid.uuid4(), event_id=f"driver-ev-{n}", kind="transaction",
               account_id=account_id, occurred_at=AT + timedelta(minutes=n), received_at=AT,
               response={"decision": "allow", "score": n, "nested": ["a", 1.5]}, payload={"n": n},
               lat=52.5 if n % 2 else None, amount="10.50")
    row.update(extra)
    return row


def test_rows_and_types_match_session_execute(db_session: Session) -> None:
    INSERT.execute(db_session, event_row(1))
    INSERT.execute(db_session, event_row(2))

    rows = DriverStatement(BY_ACCOUNT).execute(db_session, {"account_id": "driver-1"})
    expected = db_session.execute(BY_ACCOUNT, {"account_id": "driver-1"}).all()

    assert [tuple(row) for row in rows] == [tuple(row) for row in expected]
    first = rows[0]
    assert first.occurred_at == AT + timedelta(minutes=1) and first.occurred_at.tzinfo is not None
    assert first.response == {"decision": "allow", "score": 1, "nested": ["a", 1.5]}
    assert isinstance(first.id, uuid.UUID) and first.located is True and rows[1].located is False


def test_the_statements_own_values_are_kept(db_session: Session) -> None:
    INSERT.execute(db_session, [event_row(n) for n in range(3)])  # executemany

    rows = DriverStatement(FIRST_TWO).execute(db_session, {"account_id": "driver-1"})

    assert [row.event_id for row in rows] == ["driver-ev-0", "driver-ev-1"]  # LIMIT 2 of 3


def test_pending_orm_changes_are_flushed_first(db_session: Session) -> None:
    db_session.add(RiskEvent(**event_row(7, account_id="driver-orm")))

    rows = DriverStatement(BY_ACCOUNT).execute(db_session, {"account_id": "driver-orm"})

    assert len(rows) == 1 and rows[0].payload == {"n": 7}


def test_cursor_listeners_see_the_statement(db_session: Session, connection: Connection) -> None:
    seen: list[tuple[str, str]] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(("before", statement))

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(("after", statement))

    db_session.connection()  # the session's SAVEPOINT first: only the statement itself is seen below
    event.listen(connection, "before_cursor_execute", before)
    event.listen(connection, "after_cursor_execute", after)
    try:
        INSERT.execute(db_session, event_row(1))
    finally:
        event.remove(connection, "before_cursor_execute", before)
        event.remove(connection, "after_cursor_execute", after)

    assert [when for when, _ in seen] == ["before", "after"]
    assert seen[0][1].startswith("INSERT INTO risk_events")


def test_a_driver_error_is_sqlalchemys_with_the_parameters_hidden(db_session: Session) -> None:
    row = event_row(1, request_hash="secret-value-never-shown")
    INSERT.execute(db_session, row)

    with pytest.raises(IntegrityError) as caught, db_session.begin_nested():
        INSERT.execute(db_session, dict(row, id=uuid.uuid4()))  # same (client_id, event_id)

    assert "secret-value-never-shown" not in str(caught.value)
    assert "hidden" in str(caught.value)
    assert DriverStatement(FIRST_TWO).execute(db_session, {"account_id": "driver-1"})  # the transaction goes on


def test_a_statement_whose_sql_changes_per_execution_is_refused(db_session: Session) -> None:
    in_list = select(RiskEvent.id).where(RiskEvent.event_id.in_(bindparam("ids", expanding=True)))

    with pytest.raises(ValueError, match="expanding"):
        DriverStatement(in_list).execute(db_session, {"ids": ["a", "b"]})


@pytest.mark.postgres
def test_a_lost_connection_is_invalidated(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as caught:
                DriverStatement(FIRST_TWO).execute(session, {"account_id": "driver-1"})
            assert caught.value.connection_invalidated
            session.rollback()
            # The pool hands out a working connection again.
            assert DriverStatement(FIRST_TWO).execute(session, {"account_id": "nobody"}) == []
    finally:
        engine.dispose()


def test_json_columns_round_trip_through_orjson_and_its_fallbacks(db_session: Session) -> None:
    """The tables' JSON columns: written by orjson (``json`` for integers beyond 64 bits) and read back
    exactly as sent, on both databases and both statement paths (integers beyond 64 bits stay exact)."""
    document = {"amount": "12.50", "score": 7, "ratio": 0.25, "flags": [True, None], "name": "Zoë ✓",
                "huge": 2**70 + 1, "negative": -(2**64) - 3, "exact": 12345678901234567890123,
                "nested": {"k": [1, {"deep": "x"}]}}
    INSERT.execute(db_session, event_row(1, account_id="driver-json", payload=document))
    db_session.add(RiskEvent(**event_row(2, account_id="driver-json", payload={1: "int key"})))
    db_session.flush()

    rows = DriverStatement(BY_ACCOUNT).execute(db_session, {"account_id": "driver-json"})
    orm = db_session.scalars(select(RiskEvent).where(RiskEvent.account_id == "driver-json")
                             .order_by(RiskEvent.occurred_at).execution_options(populate_existing=True)).all()

    assert rows[0].payload == document == orm[0].payload
    assert rows[1].payload == {"1": "int key"} == orm[1].payload  # as json.dumps writes a non-text key


def test_json_codec_matches_the_standard_library() -> None:
    import json

    from security.db import json_dumps

    for value in ({"a": [1, 2.5, None, True, "é"]}, 2**80 + 7, [], {"x": {"y": -1e300}}, "\u2028"):
        assert json.loads(json_dumps(value)) == value
    assert json_dumps({2: "b", None: "n"}) == json.dumps({2: "b", None: "n"}).replace(", ", ",").replace(": ", ":")
    with pytest.raises(TypeError):
        json_dumps({"when": object()})  # what neither can write still raises, as json.dumps did


def test_json_a_query_builds_is_read_with_orjson_and_the_tables_jsonb_is_not(connection: Connection) -> None:
    """``OwnJSON`` (the feature probe's columns) is parsed by orjson on both databases; on PostgreSQL only
    the ``json`` type gets orjson, so the tables' ``jsonb`` (client documents) keeps exact big integers."""
    from sqlalchemy import func, type_coerce

    from security.types import OwnJSON

    sqlite = connection.dialect.name == "sqlite"
    built = (func.json_array if sqlite else func.json_build_array)(1, "a", 2.5, None)
    assert connection.execute(select(type_coerce(built, OwnJSON))).scalar_one() == [1, "a", 2.5, None]
    if not sqlite:
        from psycopg.pq import Format

        adapters = connection.connection.dbapi_connection.adapters  # type: ignore[union-attr]
        loader = adapters.get_loader(adapters.types["json"].oid, Format.TEXT)
        table_loader = adapters.get_loader(adapters.types["jsonb"].oid, Format.TEXT)
        assert loader is not None and loader.__name__ == "_OwnJsonLoader"
        assert table_loader is not None and table_loader.__name__ != "_OwnJsonLoader"
