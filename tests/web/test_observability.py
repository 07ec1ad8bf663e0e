from __future__ import annotations

import json
import logging

from security import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_on_a_migrated_database(live_app):
    response = live_app.test_client().get("/readyz")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "ready"


def test_readyz_is_503_when_the_database_is_not_migrated(settings, tmp_path):
    empty = settings.database.model_copy(update={"url": f"sqlite:///{tmp_path}/empty.sqlite3"})
    app = create_app(settings.model_copy(update={"database": empty}))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["code"] == "not_ready"


def test_readyz_is_503_when_the_database_is_down(settings):
    down = settings.database.model_copy(update={"url": "postgresql+psycopg://postgres@127.0.0.1:1/x",
                                                "connect_timeout_s": 1})
    response = create_app(settings.model_copy(update={"database": down})).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"


def test_metrics_count_requests(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert 'foxguard_http_requests_total{endpoint="operations.healthz",method="GET",status="200"}' in text
    assert "foxguard_http_request_duration_seconds_bucket" in text


def test_request_id_is_echoed_or_generated(client):
    assert client.get("/healthz", headers={"X-Request-Id": "abc-12345678"}).headers["X-Request-Id"] == "abc-12345678"
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers["X-Request-Id"]
    assert len(generated) == 32


def test_logs_are_json_with_request_id_and_no_secrets(api, capsys):
    logger = logging.getLogger("security")
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        api.put("/v1/accounts/a1", json={"email": "a@example.com"})
        api.put("/v1/accounts/a1/password?token=leak-me", json={"password": "violet-harbour-engine-42"},
                headers={"X-Request-Id": "req-log-test-1"})
    finally:
        logger.setLevel(previous)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("request_id") == "req-log-test-1")
    assert entry["status"] == 204
    assert entry["path"] == "/v1/accounts/a1/password"
    everything = json.dumps(lines)
    assert "violet-harbour" not in everything
    assert "leak-me" not in everything


def test_openapi_document_describes_operations(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    put = doc["paths"]["/v1/accounts/{account_id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/AccountIn"
    assert {"200", "201", "401", "403", "409", "422", "503"} <= set(put["responses"])
    assert put["security"] == [{"clientKey": ["accounts:write"]}]
    schemas = doc["components"]["schemas"]
    assert "AccountIn" in schemas
    assert "Problem" in schemas
    assert schemas["AccountIn"]["additionalProperties"] is False


def test_models_sharing_a_class_name_get_distinct_components(app):
    """Two slices may each have a `PasswordIn`: neither may shadow the other in the document."""
    from flask import Blueprint
    from pydantic import BaseModel

    from security.web.api import operation
    from security.web.openapi import build_openapi

    def make(field: str) -> type[BaseModel]:
        return type("TwinIn", (BaseModel,), {"__annotations__": {field: str}})

    first, second = make("alpha"), make("beta")
    bp = Blueprint("twins", __name__)

    def twin_a(body: BaseModel) -> None:
        return None

    def twin_b(body: BaseModel) -> None:
        return None

    operation(bp, "/twins/a", method="POST", body=first, summary="a")(twin_a)
    operation(bp, "/twins/b", method="POST", body=second, summary="b")(twin_b)
    app.register_blueprint(bp)
    doc = build_openapi(app)
    refs = [doc["paths"][p]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            for p in ("/twins/a", "/twins/b")]
    assert refs[0] != refs[1]
    names = [ref.rsplit("/", 1)[1] for ref in refs]
    assert set(doc["components"]["schemas"][names[0]]["properties"]) == {"alpha"}
    assert set(doc["components"]["schemas"][names[1]]["properties"]) == {"beta"}
