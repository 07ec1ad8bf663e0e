"""POST /v1/password-resets and /v1/password-resets/confirm."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from security.accounts.models import Account
from security.audit.models import AuditEntry
from security.config import Settings
from security.credentials import totp
from security.credentials.interfaces import PASSWORD_RESET_HOOKS
from security.credentials.models import PasswordResetToken, TotpCredential
from security.credentials.services import identifier_digest
from security.crypto import SecretBox
from security.runtime import runtime
from tests.conftest import ApiClient
from tests.credentials.conftest import (
    ACCOUNT,
    FIXED_REQUEST_ID,
    NEW_PASSWORD,
    OLD_PASSWORD,
    create_account,
    enroll_totp,
    outbox,
)

RESETS = "/v1/password-resets"
CONFIRM = "/v1/password-resets/confirm"


def request_reset(client: Any, identifier: str, **kw: Any) -> Any:
    return client.post(RESETS, json={"identifier": identifier}, **kw)


def last_token(db_session: Any, settings: Settings) -> str:
    """The token sealed in the newest reset message, as the dispatcher would deliver it."""
    messages = [m for m in outbox(db_session) if m.event_type == "password_reset"]
    assert messages, "no reset message in the outbox"
    sealed = messages[-1].sealed
    assert sealed is not None
    return json.loads(SecretBox(settings.secrets.encryption_keys).decrypt(sealed))["token"]


def confirm(client: Any, token: str, password: str = NEW_PASSWORD, **extra: Any) -> Any:
    return client.post(
        CONFIRM, json={"token": token, "new_password": password, **extra},
        headers={"X-Request-Id": FIXED_REQUEST_ID},
    )


def password_is(db_session: Any, app: Any, password: str) -> bool:
    db_session.expire_all()
    account = db_session.get(Account, ACCOUNT)
    return runtime(app).password_hasher.verify(account.password_hash, password).ok


@pytest.fixture
def account(api: ApiClient) -> str:
    create_account(api)
    return ACCOUNT


def test_known_and_unknown_identifiers_get_byte_identical_answers(client, api, account, db_session):
    answers = [
        request_reset(client, identifier)
        for identifier in (ACCOUNT, "ana@example.com", "+4915112345678", "nobody-9", "ghost@example.com", "+15550000")
    ]
    assert {a.status_code for a in answers} == {202}
    assert {a.mimetype for a in answers} == {"application/json"}
    assert len({a.get_data() for a in answers}) == 1
    assert answers[0].get_json()["status"] == "accepted"
    # Only the three known identifiers produced a token (and each voided the one before).
    tokens = db_session.scalars(select(PasswordResetToken).order_by(PasswordResetToken.created_at)).all()
    assert len(tokens) == 3
    assert sum(t.voided_at is None for t in tokens) == 1


def test_unknown_identifier_is_audited_by_digest_without_writing_a_token(client, db_session, settings):
    assert request_reset(client, "Ghost@Example.com").status_code == 202
    assert db_session.scalars(select(PasswordResetToken)).all() == []
    assert outbox(db_session) == []
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "account:password:reset_requested")).one()
    assert entry.subject_type == "identifier"
    assert entry.subject_id == identifier_digest("ghost@example.com", key=settings.secrets.identity_hmac_key)
    assert entry.subject_id != hashlib.sha256(b"ghost@example.com").hexdigest()
    assert "ghost" not in json.dumps(entry.data)


def test_token_goes_out_sealed_by_email_and_only_its_digest_is_stored(client, account, db_session, settings):
    assert request_reset(client, "ANA@example.com").status_code == 202
    [email] = outbox(db_session, channel="email")
    assert email.destination == "Ana@Example.com"
    token = last_token(db_session, settings)
    assert len(token) == 43
    assert token not in json.dumps(email.payload)
    [row] = db_session.scalars(select(PasswordResetToken)).all()
    assert row.channel == "email"
    assert row.expires_at == row.created_at + timedelta(minutes=30)
    dump = db_session.execute(text("SELECT * FROM password_reset_tokens")).all()
    assert token not in repr(dump)
    [webhook] = outbox(db_session, event_type="password.reset_requested")
    assert webhook.payload["data"] == {
        "account_id": ACCOUNT, "channel": "email", "expires_at": row.expires_at.isoformat()
    }


def test_phone_identifier_sends_the_token_by_sms(client, account, db_session):
    assert request_reset(client, "+4915112345678").status_code == 202
    [sms] = outbox(db_session, channel="sms")
    assert sms.destination == "+4915112345678"
    assert sms.sealed is not None
    assert outbox(db_session, channel="email") == []


def test_token_is_never_logged(client, account, db_session, settings, captured_logs):
    request_reset(client, ACCOUNT)
    token = last_token(db_session, settings)
    assert confirm(client, token).status_code == 204
    assert confirm(client, token).status_code == 400
    logged = captured_logs.text()
    assert "/v1/password-resets/confirm" in logged  # the requests were logged: the check below means something
    assert token not in logged
    assert NEW_PASSWORD not in logged


def test_confirm_sets_the_password_and_announces_it(client, app, account, db_session, settings):
    request_reset(client, ACCOUNT)
    token = last_token(db_session, settings)
    response = confirm(client, token)
    assert response.status_code == 204
    assert password_is(db_session, app, NEW_PASSWORD)
    assert not password_is(db_session, app, OLD_PASSWORD)
    [changed] = outbox(db_session, event_type="password.changed")[-1:]
    assert changed.payload["data"]["account_id"] == ACCOUNT
    assert changed.payload["data"]["reason"] == "reset"
    actions = db_session.scalars(select(AuditEntry.action).where(AuditEntry.subject_id == ACCOUNT)).all()
    assert "account:password:reset_completed" in actions
    row = db_session.scalars(select(PasswordResetToken)).one()
    assert row.used_at is not None


def test_reused_expired_tampered_and_unknown_tokens_get_one_identical_400(client, account, db_session, settings, clock):
    request_reset(client, ACCOUNT)
    used = last_token(db_session, settings)
    assert confirm(client, used).status_code == 204

    request_reset(client, ACCOUNT)
    expiring = last_token(db_session, settings)
    request_reset(client, "ana@example.com")
    fresh = last_token(db_session, settings)
    tampered = fresh[:-1] + ("A" if fresh[-1] != "A" else "B")
    voided = expiring  # replaced by `fresh`
    clock.advance(minutes=31)

    answers = [confirm(client, t, "another-fine-password-91") for t in (used, fresh, tampered, voided, "x" * 43, "?")]
    assert {a.status_code for a in answers} == {400}
    assert {a.mimetype for a in answers} == {"application/problem+json"}
    assert len({a.get_data() for a in answers}) == 1
    assert answers[0].get_json()["code"] == "invalid_reset_token"


def test_expiry_is_thirty_minutes(client, app, account, db_session, settings, clock):
    request_reset(client, ACCOUNT)
    token = last_token(db_session, settings)
    clock.advance(minutes=29, seconds=59)
    assert confirm(client, token).status_code == 204
    request_reset(client, ACCOUNT)
    token = last_token(db_session, settings)
    clock.advance(minutes=30)
    assert confirm(client, token, "another-fine-password-91").status_code == 400


def test_weak_password_is_422_and_keeps_the_token_usable(client, app, account, db_session, settings):
    request_reset(client, ACCOUNT)
    token = last_token(db_session, settings)
    weak = confirm(client, token, "password")
    assert weak.status_code == 422
    assert weak.get_json()["code"] == "weak_password"
    assert {e["field"] for e in weak.get_json()["errors"]} == {"new_password"}
    assert password_is(db_session, app, OLD_PASSWORD)
    assert confirm(client, token).status_code == 204


def test_validation_errors_never_echo_the_secrets(client):
    response = client.post(CONFIRM, json={"token": "t" * 300, "new_password": "hunter2-secret", "extra": 1})
    assert response.status_code == 422
    assert "hunter2-secret" not in response.get_data(as_text=True)
    assert "t" * 300 not in response.get_data(as_text=True)


def test_both_codes_at_once_are_refused(client):
    response = client.post(CONFIRM, json={"token": "x", "new_password": NEW_PASSWORD, "totp_code": "123456",
                                          "recovery_code": "abcd-efgh-jkmn-pqrs"})
    assert response.status_code == 422


class TestWithTotpEnrolled:
    @pytest.fixture
    def secret(self, api, account, clock) -> tuple[str, list[str]]:
        return enroll_totp(api, clock)

    def test_reset_without_code_is_refused_and_writes_nothing(self, client, app, secret, db_session, settings):
        request_reset(client, ACCOUNT)
        token = last_token(db_session, settings)
        response = confirm(client, token)
        assert response.status_code == 400
        assert response.get_json()["code"] == "second_factor_required"
        assert password_is(db_session, app, OLD_PASSWORD)
        assert db_session.scalars(select(PasswordResetToken)).one().used_at is None

    def test_wrong_code_is_refused_counted_and_committed(self, client, app, secret, db_session, settings):
        request_reset(client, ACCOUNT)
        token = last_token(db_session, settings)
        response = confirm(client, token, totp_code="000000")
        assert response.status_code == 400
        assert response.get_json()["code"] == "second_factor_rejected"
        assert password_is(db_session, app, OLD_PASSWORD)
        db_session.expire_all()
        assert db_session.get(TotpCredential, ACCOUNT).failure_count == 1
        assert db_session.scalars(select(PasswordResetToken)).one().failed_attempts == 1

    def test_valid_totp_code_completes_the_reset(self, client, app, secret, db_session, settings, clock):
        request_reset(client, ACCOUNT)
        token = last_token(db_session, settings)
        assert confirm(client, token, totp_code=totp.code_at(secret[0], clock.now())).status_code == 204
        assert password_is(db_session, app, NEW_PASSWORD)

    def test_the_same_totp_code_cannot_be_used_twice(self, client, app, secret, db_session, settings, clock):
        code = totp.code_at(secret[0], clock.now())
        request_reset(client, ACCOUNT)
        assert confirm(client, last_token(db_session, settings), totp_code=code).status_code == 204
        request_reset(client, ACCOUNT)
        replay = confirm(client, last_token(db_session, settings), "another-fine-password-91", totp_code=code)
        assert replay.status_code == 400
        assert replay.get_json()["code"] == "second_factor_rejected"

    def test_recovery_code_completes_a_reset_once(self, client, app, secret, db_session, settings):
        _, codes = secret
        request_reset(client, ACCOUNT)
        assert confirm(client, last_token(db_session, settings), recovery_code=codes[3]).status_code == 204
        [used] = outbox(db_session, event_type="mfa.recovery_code_used")
        assert used.payload["data"]["remaining"] == 9
        request_reset(client, ACCOUNT)
        reuse = confirm(client, last_token(db_session, settings), "another-fine-password-91", recovery_code=codes[3])
        assert reuse.status_code == 400
        assert reuse.get_json()["code"] == "second_factor_rejected"
        assert password_is(db_session, app, NEW_PASSWORD)

    def test_too_many_wrong_codes_void_the_token(self, client, app, secret, db_session, settings, clock):
        request_reset(client, ACCOUNT)
        token = last_token(db_session, settings)
        for _ in range(5):
            assert confirm(client, token, totp_code="000000").status_code == 400
        # Even the right code is useless now: the token is gone.
        right = confirm(client, token, totp_code=totp.code_at(secret[0], clock.now()))
        assert right.status_code == 400
        assert right.get_json()["code"] == "invalid_reset_token"


def test_reset_hook_runs_in_the_transaction(client, app, account, db_session, settings, clock):
    calls: list[dict[str, Any]] = []

    def hook(session, *, account_id, at, actor):
        calls.append({"account_id": account_id, "at": at, "actor": actor, "session": session is not None})

    runtime(app).extras[PASSWORD_RESET_HOOKS].append(hook)
    request_reset(client, ACCOUNT)
    assert confirm(client, last_token(db_session, settings)).status_code == 204
    assert calls == [{"account_id": ACCOUNT, "at": clock.now(), "actor": "user", "session": True}]


def test_hook_not_run_for_refused_resets(client, app, account, db_session, settings):
    calls: list[str] = []
    runtime(app).extras[PASSWORD_RESET_HOOKS].append(lambda session, **kw: calls.append(kw["account_id"]))
    assert confirm(client, "x" * 43).status_code == 400
    assert calls == []


class TestRateLimits:
    def test_per_identifier_limit_gives_429_problem_with_retry_after(self, app_factory, db_session, service_key):
        app = app_factory(credentials={"reset_requests_per_identifier": "3 per hour"})
        client = app.test_client()
        answers = [request_reset(client, "ghost@example.com") for _ in range(4)]
        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        limited = answers[-1]
        assert limited.mimetype == "application/problem+json"
        assert limited.get_json()["code"] == "rate_limited"
        assert 0 < int(limited.headers["Retry-After"]) <= 3600
        # The limit is per identifier (normalised), not global.
        assert request_reset(client, "GHOST@example.com").status_code == 429
        assert request_reset(client, "other@example.com").status_code == 202

    def test_per_ip_limit_spans_identifiers(self, app_factory, db_session):
        app = app_factory(credentials={"reset_requests_per_ip": "2 per hour"})
        client = app.test_client()
        statuses = [request_reset(client, f"user{i}@example.com").status_code for i in range(3)]
        assert statuses == [202, 202, 429]
        other_ip = request_reset(client, "user9@example.com", environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert other_ip.status_code == 202

    def test_known_and_unknown_identifiers_share_the_same_limit(self, app_factory, db_session, service_key):
        app = app_factory(credentials={"reset_requests_per_identifier": "1 per hour"})
        client = app.test_client()
        api = ApiClient(client, service_key)
        create_account(api)
        assert [request_reset(client, ACCOUNT).status_code for _ in range(2)] == [202, 429]
        assert [request_reset(client, "nobody-1").status_code for _ in range(2)] == [202, 429]

    def test_confirm_is_limited_per_ip(self, app_factory, db_session):
        app = app_factory(credentials={"reset_confirms_per_ip": "2 per hour"})
        client = app.test_client()
        assert [confirm(client, "x" * 43).status_code for _ in range(3)] == [400, 400, 429]

    def test_limits_are_shared_through_redis(self, app_factory, db_session, redis_url, settings):
        prefix = f"fg-test-{uuid.uuid4().hex}"  # fresh counters on every run
        overrides = {"redis": {"url": redis_url},
                     "credentials": {"reset_requests_per_identifier": "2 per hour", "rate_limit_key_prefix": prefix}}
        # Two apps = two workers: they share the counters only because the storage is Redis.
        first, second = app_factory(**overrides).test_client(), app_factory(**overrides).test_client()
        assert request_reset(first, "shared@example.com").status_code == 202
        assert request_reset(second, "shared@example.com").status_code == 202
        assert request_reset(first, "shared@example.com").status_code == 429


def test_unreachable_rate_limit_storage_fails_closed_with_503(app_factory, db_session):
    # Nothing listens on port 9 (discard) locally: the Redis storage cannot be reached.
    app = app_factory(redis={"url": "redis://127.0.0.1:9/0"})
    response = request_reset(app.test_client(), "ana@example.com")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "rate_limiter_unavailable"
    assert response.headers["Retry-After"] == "30"
    assert db_session.scalars(select(PasswordResetToken)).all() == []


def test_invalid_rate_limit_setting_fails_at_start(app_factory):
    with pytest.raises(ValueError, match="not a rate limit"):
        app_factory(credentials={"reset_requests_per_ip": "lots"})
