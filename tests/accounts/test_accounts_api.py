from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher as Argon2
from sqlalchemy import select

from security.accounts.models import Account
from security.audit.models import AuditEntry
from security.delivery.outbox import OutboxMessage

PROFILE = {"email": "Ana@Example.com", "phone": "+4915112345678", "home_country": "DE",
           "identity_document": "C01X00T47"}
STRONG = "violet-harbour-engine-42"


def put_profile(api: Any, account_id: str = "acc-1", **changes: Any) -> Any:
    return api.put(f"/v1/accounts/{account_id}", json={**PROFILE, **changes})


def test_upsert_creates_then_updates(api, db_session):
    created = put_profile(api)
    assert created.status_code == 201
    body = created.get_json()
    assert body["account_id"] == "acc-1"
    assert body["email"] == "Ana@Example.com"
    assert body["identity_document_on_file"] is True
    assert body["status"] == "active"
    assert "identity_document" not in body

    updated = put_profile(api, home_country="AT")
    assert updated.status_code == 200
    assert updated.get_json()["home_country"] == "AT"
    actions = db_session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)).all()
    assert actions == ["client:key:created", "account:profile:created", "account:profile:updated"]


def test_identity_document_is_stored_only_as_keyed_hmac(api, db_session):
    put_profile(api, identity_document="ab 123-456")
    account = db_session.get(Account, "acc-1")
    assert account.identity_document_hmac is not None
    assert "123456" not in account.identity_document_hmac
    assert len(account.identity_document_hmac) == 64


def test_get_returns_profile_without_secrets(api):
    put_profile(api)
    api.put("/v1/accounts/acc-1/password", json={"password": STRONG})
    response = api.get("/v1/accounts/acc-1")
    assert response.status_code == 200
    body = response.get_json()
    assert body["has_password"] is True
    text = response.get_data(as_text=True)
    assert "argon2" not in text and "C01X00T47" not in text and STRONG not in text


def test_unknown_account_is_404_problem(api):
    response = api.get("/v1/accounts/nobody")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "account_not_found"


def test_invalid_account_id_in_path_is_404(api):
    response = api.put("/v1/accounts/has%20space", json=PROFILE)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_email_owned_by_another_account_is_409_and_nothing_written(api, db_session):
    put_profile(api, "acc-1")
    response = put_profile(api, "acc-2", email="ana@example.com", phone="+4915100000000")
    assert response.status_code == 409
    assert response.get_json()["field"] == "email"
    assert db_session.get(Account, "acc-2") is None


def test_profile_validation_errors_name_every_field(api):
    response = api.put("/v1/accounts/acc-1", json={"email": "not-an-email", "phone": "12345",
                                                   "home_country": "Germany", "extra": 1})
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"email", "phone", "home_country", "extra"}


def test_password_is_hashed_with_argon2id_and_announced(api, db_session):
    put_profile(api)
    response = api.put("/v1/accounts/acc-1/password", json={"password": STRONG})
    assert response.status_code == 204
    account = db_session.get(Account, "acc-1")
    assert account.password_hash.startswith("$argon2id$")
    assert Argon2().verify(account.password_hash, STRONG)
    message = db_session.scalars(select(OutboxMessage).where(OutboxMessage.event_type == "password.changed")).one()
    assert message.payload["data"]["account_id"] == "acc-1"
    assert STRONG not in str(message.payload)


def test_password_for_unknown_account_is_404(api):
    assert api.put("/v1/accounts/ghost/password", json={"password": STRONG}).status_code == 404


def weak(api: Any, password: str) -> dict[str, Any]:
    response = api.put("/v1/accounts/acc-1/password", json={"password": password})
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] == "weak_password"
    return body


def test_weak_passwords_get_a_clear_reason(api, db_session):
    put_profile(api)
    assert weak(api, "short")["errors"][0]["code"] == "too_short"
    assert weak(api, "x" * 129)["errors"][0]["code"] == "too_long"
    assert weak(api, "iloveyou1")["errors"][0]["code"] == "common"
    assert weak(api, "ana@example.com")["errors"][0]["code"] == "matches_identifier"
    assert weak(api, "acc-1acc-1")["errors"][0]["code"] == "too_weak"
    assert "guessable" in weak(api, "aaaaaaaaaaaa")["detail"]
    assert db_session.get(Account, "acc-1").password_hash is None


def test_password_exactly_at_the_length_bounds(api):
    put_profile(api)
    assert api.put("/v1/accounts/acc-1/password", json={"password": "Qz7#vLp2"}).status_code == 204
    long_password = ("Qz7#vLp2-" * 15)[:128]
    assert api.put("/v1/accounts/acc-1/password", json={"password": long_password}).status_code == 204
