from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from security.audit.models import AuditEntry
from security.operators.models import Operator, OperatorSession
from security.operators.services import AuditTag
from security.operators.views import SIGN_IN_FAILED_DETAIL

STEP = timedelta(seconds=30)


def sign_in(client, op, clock, *, code=None, password=None):
    return client.post("/v1/review/tokens", json={
        "name": op.name, "password": password or op.password, "totp_code": code or op.code(clock.now()),
    })


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def without_request_id(body):
    return {k: v for k, v in body.items() if k != "request_id"}


def test_token_for_password_and_totp(client, clock, new_operator, db_session):
    op = new_operator("alice", "reviewer")
    response = sign_in(client, op, clock)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["token"].startswith("fgo_")
    assert body["operator"]["role"] == "reviewer"
    assert "review:appeals:decide" in body["operator"]["permissions"]
    me = client.get("/v1/review/me", headers=bearer(body["token"]))
    assert me.status_code == 200
    assert me.get_json()["name"] == "alice"
    # Stored only hashed.
    stored = db_session.scalars(select(OperatorSession.token_hash)).all()
    assert body["token"] not in stored
    assert len(stored) == 1


def test_every_failure_answers_the_same(client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    wrong_code = f"{(int(op.code(clock.now())) + 1) % 1_000_000:06d}"
    bodies = [
        sign_in(client, op, clock, code=wrong_code),
        sign_in(client, op, clock, password="not-the-password-at-all"),
        client.post("/v1/review/tokens", json={"name": "nobody", "password": "x", "totp_code": "123456"}),
    ]
    assert [r.status_code for r in bodies] == [401, 401, 401]
    first = without_request_id(bodies[0].get_json())
    assert first["code"] == "sign_in_failed"
    assert first["detail"] == SIGN_IN_FAILED_DETAIL
    for other in bodies[1:]:
        assert without_request_id(other.get_json()) == first


def test_failures_are_audited_with_the_cause_kept_internal(client, clock, new_operator, db_session):
    op = new_operator("alice", "reviewer")
    sign_in(client, op, clock, code="000000" if op.code(clock.now()) != "000000" else "111111")
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == AuditTag.SIGN_IN_FAILED)).one()
    assert entry.subject_id == op.id
    assert entry.data == {"reason": "bad_totp"}


def test_a_totp_code_is_accepted_once(client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    code = op.code(clock.now())
    assert sign_in(client, op, clock, code=code).status_code == 201
    assert sign_in(client, op, clock, code=code).status_code == 401
    clock.advance(STEP)
    assert sign_in(client, op, clock).status_code == 201


def test_lockout_after_repeated_failures_even_with_the_right_factors(client, clock, new_operator, db_session):
    op = new_operator("alice", "reviewer")
    for _ in range(5):  # default max_failed_sign_ins
        assert sign_in(client, op, clock, password="wrong-password-here").status_code == 401
    clock.advance(STEP)
    assert sign_in(client, op, clock).status_code == 401
    row = db_session.scalars(select(Operator).where(Operator.name == "alice")).one()
    db_session.refresh(row)
    assert row.locked_until is not None
    reasons = db_session.scalars(
        select(AuditEntry.data).where(AuditEntry.action == AuditTag.SIGN_IN_FAILED).order_by(AuditEntry.seq)
    ).all()
    assert reasons[-1] == {"reason": "locked_out"}
    clock.advance(minutes=15)
    assert sign_in(client, op, clock).status_code == 201


def test_success_resets_the_failure_count(client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    for _ in range(4):
        sign_in(client, op, clock, password="wrong-password-here")
    assert sign_in(client, op, clock).status_code == 201
    for _ in range(4):
        sign_in(client, op, clock, password="wrong-password-here")
    clock.advance(STEP)
    assert sign_in(client, op, clock).status_code == 201


def test_token_expires(client, clock, new_operator):
    op = new_operator("alice", "viewer")
    token = sign_in(client, op, clock).get_json()["token"]
    clock.advance(minutes=59)
    assert client.get("/v1/review/me", headers=bearer(token)).status_code == 200
    clock.advance(minutes=1)
    assert client.get("/v1/review/me", headers=bearer(token)).status_code == 401


def test_revoked_token_is_refused(client, clock, new_operator):
    op = new_operator("alice", "viewer")
    token = sign_in(client, op, clock).get_json()["token"]
    assert client.delete("/v1/review/tokens/current", headers=bearer(token)).status_code == 204
    assert client.get("/v1/review/me", headers=bearer(token)).status_code == 401


def test_permissions_are_enforced(client, clock, new_operator):
    viewer = new_operator("vera", "viewer")
    admin = new_operator("adam", "admin")
    viewer_token = sign_in(client, viewer, clock).get_json()["token"]
    admin_token = sign_in(client, admin, clock).get_json()["token"]
    refused = client.get("/v1/review/operators", headers=bearer(viewer_token))
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "permission_denied"
    listed = client.get("/v1/review/operators", headers=bearer(admin_token))
    assert listed.status_code == 200
    assert [o["name"] for o in listed.get_json()["operators"]] == ["adam", "vera"]


def test_service_client_keys_are_not_operator_tokens(client, service_key):
    assert client.get("/v1/review/me", headers=bearer(service_key)).status_code == 401
    assert client.get("/v1/review/me").status_code == 401


def test_disabled_operator_loses_tokens_and_cannot_sign_in(app, client, clock, new_operator):
    op = new_operator("alice", "reviewer")
    token = sign_in(client, op, clock).get_json()["token"]
    result = app.test_cli_runner().invoke(args=["operators", "disable", "alice"])
    assert result.exit_code == 0, result.output
    assert client.get("/v1/review/me", headers=bearer(token)).status_code == 401
    clock.advance(STEP)
    assert sign_in(client, op, clock).status_code == 401


def test_token_issue_is_audited_with_the_operator_as_actor(client, clock, new_operator, db_session):
    op = new_operator("alice", "reviewer")
    sign_in(client, op, clock)
    actors = {
        e.action: e.actor for e in db_session.scalars(select(AuditEntry).where(AuditEntry.subject_id == op.id))
    }
    assert actors[AuditTag.SIGN_IN_SUCCEEDED] == f"operator:{op.id}"
    assert actors[AuditTag.TOKEN_ISSUED] == f"operator:{op.id}"


@pytest.mark.parametrize("body", [{}, {"name": "a", "password": "b"}, {"name": "a", "password": "b", "totp_code": "1",
                                                                       "extra": 1}])
def test_malformed_token_requests_are_422(client, body):
    response = client.post("/v1/review/tokens", json=body)
    assert response.status_code == 422
    assert response.get_json()["code"] == "invalid_input"


def test_openapi_documents_operator_token_scheme(client):
    document = client.get("/openapi.json").get_json()
    assert "operatorToken" in document["components"]["securitySchemes"]
    assert document["paths"]["/v1/review/me"]["get"]["security"] == [{"operatorToken": ["review:cases:read"]}]
