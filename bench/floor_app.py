"""The framework floor: the least a Flask endpoint can do for the same request.

Same gunicorn settings, same database (engine built by ``security.db.make_engine`` from the same
``FOXGUARD_*`` settings, so pool, SQLite pragmas and ``BEGIN IMMEDIATE`` are identical), same JSON
bodies validated by the same pydantic models as the real endpoints, and one row inserted into the same
``risk_events`` table (with its indexes). What it does *not* do is everything that makes the service the
service: API-key authentication, idempotency, feature queries, rule evaluation, storing the assessment
and its rule results, audit and outbox. The throughput ratio service/floor is the price of those.

Rows are written with ``client_id = FLOOR_CLIENT_ID`` so the orchestrator can delete them after the floor
run and the service never scores against them.

    FOXGUARD_DATABASE_URL=... gunicorn -c bench/gunicorn_conf.py 'bench.floor_app:create_floor_app()'
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

from flask import Flask, Response, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import insert

from security.clock import SystemClock
from security.config import load_settings
from security.db import make_engine
from security.risk.models import RiskEvent
from security.risk.schemas import LoginEventIn, TransactionEventIn

FLOOR_CLIENT_ID: Final = uuid.UUID("00000000-0000-4000-8000-00000000f100")
JSON_HEADERS: Final = {"Content-Type": "application/json"}


def _answer(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, headers=JSON_HEADERS)


def _common(body: LoginEventIn | TransactionEventIn, kind: str, received_at: Any) -> dict[str, Any]:
    ctx = body.context
    return {
        "id": uuid.uuid4(),
        "client_id": FLOOR_CLIENT_ID,
        "event_id": body.event_id,
        "kind": kind,
        "account_id": body.account_id,
        "occurred_at": body.occurred_at,
        "received_at": received_at,
        "ip": ctx.ip,
        "country": ctx.country,
        "device_id": ctx.device_id,
        "lat": ctx.lat,
        "lon": ctx.lon,
        "payload": body.model_dump(mode="json"),
    }


def create_floor_app() -> Flask:
    """The floor app, configured from the same settings sources as the service."""
    settings = load_settings()
    engine = make_engine(settings)
    clock = SystemClock()
    table = RiskEvent.__table__
    app = Flask(__name__)
    app.extensions["bench_engine"] = engine  # bench.profile counts its statements

    def validated(model: type[BaseModel]) -> BaseModel | Response:
        try:
            data = json.loads(request.get_data())
        except ValueError:
            return _answer(400, {"code": "bad_json"})
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            return _answer(422, {"code": "invalid_input", "errors": [e["loc"] for e in exc.errors()]})

    def store(row: dict[str, Any]) -> None:
        with engine.begin() as connection:
            connection.execute(insert(table), row)

    @app.post("/v1/events/transaction")
    def transaction() -> Response:
        body = validated(TransactionEventIn)
        if isinstance(body, Response):
            return body
        assert isinstance(body, TransactionEventIn)
        row = _common(body, "transaction", clock.now())
        row.update(amount=body.amount, currency=body.currency, destination_address=body.destination.address,
                   destination_country=body.destination.country)
        store(row)
        return _answer(200, {"event_id": body.event_id, "decision": "allow"})

    @app.post("/v1/events/login")
    def login() -> Response:
        body = validated(LoginEventIn)
        if isinstance(body, Response):
            return body
        assert isinstance(body, LoginEventIn)
        row = _common(body, "login", clock.now())
        row.update(outcome=body.outcome)
        store(row)
        return _answer(200, {"event_id": body.event_id, "decision": "allow"})

    @app.get("/healthz")
    def healthz() -> Response:
        return _answer(200, {"status": "ok"})

    return app
