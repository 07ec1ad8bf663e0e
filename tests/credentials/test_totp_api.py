"""TOTP enrollment, confirmation, disabling, recovery codes and key rotation."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from security.audit.models import AuditEntry
from security.credentials import recovery, totp
from security.credentials.models import RecoveryCode, TotpCredential
from security.crypto import SecretBox, UndecryptableSecret
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key
from tests.credentials.conftest import ACCOUNT, create_account, enroll_totp, outbox

TOTP = f"/v1/accounts/{ACCOUNT}/totp"


@pytest.fixture
def account(api: ApiClient) -> str:
    create_account(api)
    return ACCOUNT


def audit_actions(db_session: Any) -> list[str]:
    return list(db_session.scalars(select(AuditEntry.action).where(AuditEntry.subject_id == ACCOUNT)))


def test_enrollment_returns_secret_uri_and_qr(api, account, settings):
    response = api.post(TOTP)
    assert response.status_code == 201
    body = response.get_json()
    assert len(base64.b32decode(body["secret"])) == 20
    assert body["otpauth_uri"].startswith("otpauth://totp/Foxguard:")
    assert f"secret={body['secret']}" in body["otpauth_uri"]
    assert "issuer=Foxguard" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg")


def test_issuer_comes_from_settings(app_factory, db_session, clock):
    app = app_factory(credentials={"totp_issuer": "Acme Wallet"})
    api = ApiClient(app.test_client(), issue_key(db_session, clock, "backend-2", ["accounts:write",
                                                                              "credentials:write"]))
    create_account(api)
    assert "issuer=Acme%20Wallet" in api.post(TOTP).get_json()["otpauth_uri"]


def test_secret_is_unreadable_in_the_database(api, account, db_session, settings):
    secret = api.post(TOTP).get_json()["secret"]
    rows = db_session.execute(text("SELECT * FROM totp_credentials")).all()
    assert len(rows) == 1
    raw = repr(rows)
    assert secret not in raw
    assert secret.lower() not in raw.lower()
    assert base64.b32decode(secret).hex() not in raw
    ciphertext = db_session.execute(text("SELECT secret_ciphertext FROM totp_credentials")).scalar_one()
    # Only the configured key opens it.
    assert SecretBox(settings.secrets.encryption_keys).decrypt(ciphertext).decode() == secret
    with pytest.raises(UndecryptableSecret):
        SecretBox([Fernet.generate_key().decode()]).decrypt(ciphertext)


def test_confirm_activates_and_returns_ten_recovery_codes_once(api, account, db_session, clock):
    secret = api.post(TOTP).get_json()["secret"]
    wrong = api.post(f"{TOTP}/confirm", json={"code": "000000"})
    assert wrong.status_code == 400
    assert wrong.get_json()["code"] == "invalid_totp_code"
    assert db_session.get(TotpCredential, ACCOUNT).confirmed_at is None

    ok = api.post(f"{TOTP}/confirm", json={"code": totp.code_at(secret, clock.now())})
    assert ok.status_code == 200
    codes = ok.get_json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert all(recovery.normalize(c) == c for c in codes)
    stored = db_session.scalars(select(RecoveryCode.code_hash)).all()
    assert sorted(stored) == sorted(recovery.hash_code(c) for c in codes)
    assert not any(c in repr(db_session.execute(text("SELECT * FROM recovery_codes")).all()) for c in codes)

    [enabled] = outbox(db_session, event_type="mfa.enabled")
    assert enabled.payload["data"]["account_id"] == ACCOUNT
    assert audit_actions(db_session)[-2:] == ["account:mfa:enrollment_started", "account:mfa:enabled"]
    again = api.post(f"{TOTP}/confirm", json={"code": totp.code_at(secret, clock.now())})
    assert again.status_code == 409
    assert again.get_json()["code"] == "totp_already_enabled"


def test_confirm_without_enrollment_is_409(api, account):
    response = api.post(f"{TOTP}/confirm", json={"code": "123456"})
    assert response.status_code == 409
    assert response.get_json()["code"] == "totp_not_pending"


def test_restarting_a_pending_enrollment_replaces_the_secret(api, account, clock):
    first = api.post(TOTP).get_json()["secret"]
    second = api.post(TOTP).get_json()["secret"]
    assert first != second
    stale = api.post(f"{TOTP}/confirm", json={"code": totp.code_at(first, clock.now())})
    assert stale.status_code == 400
    assert api.post(f"{TOTP}/confirm", json={"code": totp.code_at(second, clock.now())}).status_code == 200


def test_enrolling_again_while_enabled_is_409(api, account, clock):
    enroll_totp(api, clock)
    response = api.post(TOTP)
    assert response.status_code == 409
    assert response.get_json()["code"] == "totp_already_enabled"


def test_endpoints_need_the_credentials_scope(client, db_session, clock, account):
    assert client.post(TOTP).status_code == 401
    limited = ApiClient(client, issue_key(db_session, clock, "reader", ["accounts:read"]))
    response = limited.post(TOTP)
    assert response.status_code == 403
    assert response.get_json()["code"] == "insufficient_scope"


def test_unknown_account_is_404(api):
    assert api.post("/v1/accounts/nobody/totp").status_code == 404


class TestDisable:
    def test_wrong_code_is_refused_and_the_failure_is_kept(self, api, account, db_session, clock):
        enroll_totp(api, clock)
        response = api.delete(TOTP, json={"totp_code": "000000"})
        assert response.status_code == 400
        assert response.get_json()["code"] == "second_factor_rejected"
        db_session.expire_all()
        credential = db_session.get(TotpCredential, ACCOUNT)
        assert credential is not None
        assert credential.failure_count == 1
        assert credential.last_failure_at == clock.now()
        assert "account:mfa:verification_failed" in audit_actions(db_session)

    def test_valid_code_disables_and_announces(self, api, account, db_session, clock):
        secret, _ = enroll_totp(api, clock)
        response = api.delete(TOTP, json={"totp_code": totp.code_at(secret, clock.now())})
        assert response.status_code == 204
        db_session.expire_all()
        assert db_session.get(TotpCredential, ACCOUNT) is None
        assert db_session.scalars(select(RecoveryCode)).all() == []
        [disabled] = outbox(db_session, event_type="mfa.disabled")
        assert disabled.payload["data"]["account_id"] == ACCOUNT
        assert audit_actions(db_session)[-1] == "account:mfa:disabled"
        # And it can be enrolled afresh.
        assert api.post(TOTP).status_code == 201

    def test_recovery_code_disables(self, api, account, db_session, clock):
        _, codes = enroll_totp(api, clock)
        assert api.delete(TOTP, json={"recovery_code": codes[0].upper()}).status_code == 204

    def test_code_is_required(self, api, account, clock):
        enroll_totp(api, clock)
        assert api.delete(TOTP, json={}).status_code == 422

    def test_not_enabled_is_409(self, api, account):
        response = api.delete(TOTP, json={"totp_code": "123456"})
        assert response.status_code == 409
        assert response.get_json()["code"] == "totp_not_enabled"


class TestRecoveryCodes:
    def test_used_recovery_code_is_refused_the_second_time(self, api, account, db_session, clock):
        _, codes = enroll_totp(api, clock)
        # Regenerating with codes[0] spends it; the new set is then used twice with the same code.
        new_codes = api.post(f"{TOTP}/recovery-codes", json={"recovery_code": codes[0]}).get_json()["recovery_codes"]
        assert api.post(f"{TOTP}/recovery-codes", json={"recovery_code": new_codes[0]}).status_code == 200
        newest = db_session.scalars(select(RecoveryCode)).all()
        assert len(newest) == 10
        assert all(r.used_at is None for r in newest)
        reused = api.delete(TOTP, json={"recovery_code": new_codes[0]})
        assert reused.status_code == 400
        assert reused.get_json()["code"] == "second_factor_rejected"

    def test_using_a_recovery_code_is_audited_and_announced(self, api, account, db_session, clock):
        _, codes = enroll_totp(api, clock)
        assert api.delete(TOTP, json={"recovery_code": codes[5]}).status_code == 204
        [used] = outbox(db_session, event_type="mfa.recovery_code_used")
        assert used.payload["data"] == {"account_id": ACCOUNT, "used_at": clock.now().isoformat(), "remaining": 9}
        assert "account:mfa:recovery_code_used" in audit_actions(db_session)

    def test_regeneration_invalidates_the_old_set(self, api, account, db_session, clock):
        secret, old = enroll_totp(api, clock)
        response = api.post(f"{TOTP}/recovery-codes", json={"totp_code": totp.code_at(secret, clock.now())})
        assert response.status_code == 200
        new = response.get_json()["recovery_codes"]
        assert len(new) == 10
        assert not set(new) & set(old)
        assert len(db_session.scalars(select(RecoveryCode)).all()) == 10
        [announced] = outbox(db_session, event_type="mfa.recovery_codes_regenerated")
        assert announced.payload["data"]["account_id"] == ACCOUNT
        assert api.delete(TOTP, json={"recovery_code": old[2]}).status_code == 400
        assert api.delete(TOTP, json={"recovery_code": new[2]}).status_code == 204

    def test_regeneration_with_wrong_code_is_refused(self, api, account, db_session, clock):
        _, old = enroll_totp(api, clock)
        response = api.post(f"{TOTP}/recovery-codes", json={"totp_code": "000000"})
        assert response.status_code == 400
        assert api.delete(TOTP, json={"recovery_code": old[0]}).status_code == 204


class TestKeyRotation:
    def test_rotation_keeps_old_secrets_working(self, app_factory, api, account, db_session, clock, settings):
        secret, _ = enroll_totp(api, clock)
        old_keys = list(settings.secrets.encryption_keys)
        new_key = Fernet.generate_key().decode()
        old_ciphertext = db_session.execute(text("SELECT secret_ciphertext FROM totp_credentials")).scalar_one()

        # The new key goes first; the old one stays listed so existing secrets still decrypt.
        rotated_app = app_factory(secrets={"encryption_keys": [new_key, *old_keys]})
        rotated_api = ApiClient(rotated_app.test_client(), api.key)
        regen = rotated_api.post(f"{TOTP}/recovery-codes", json={"totp_code": totp.code_at(secret, clock.now())})
        assert regen.status_code == 200

        result = rotated_app.test_cli_runner().invoke(args=["keys", "rotate"])
        assert result.exit_code == 0, result.output
        assert "re-encrypted 1 TOTP secret(s)" in result.output
        db_session.expire_all()
        new_ciphertext = db_session.execute(text("SELECT secret_ciphertext FROM totp_credentials")).scalar_one()
        assert new_ciphertext != old_ciphertext
        # Now the new key alone opens it; the old key no longer does.
        assert SecretBox([new_key]).decrypt(new_ciphertext).decode() == secret
        with pytest.raises(UndecryptableSecret):
            SecretBox(old_keys).decrypt(new_ciphertext)

        # After dropping the old key, codes still verify.
        new_only = app_factory(secrets={"encryption_keys": [new_key]})
        clock.advance(seconds=totp.PERIOD_SECONDS)
        disable = ApiClient(new_only.test_client(), api.key).delete(
            TOTP, json={"totp_code": totp.code_at(secret, clock.now())}
        )
        assert disable.status_code == 204
        assert "system:keys:totp_secrets_rotated" in db_session.scalars(select(AuditEntry.action)).all()

    def test_rotation_without_the_old_key_changes_nothing(self, app_factory, api, account, db_session, clock):
        enroll_totp(api, clock)
        before = db_session.execute(text("SELECT secret_ciphertext FROM totp_credentials")).scalar_one()
        forgetful = app_factory(secrets={"encryption_keys": [Fernet.generate_key().decode()]})
        result = forgetful.test_cli_runner().invoke(args=["keys", "rotate"])
        assert result.exit_code == 1
        assert f"account '{ACCOUNT}' matches none of the configured keys" in result.output
        assert "nothing was changed" in result.output
        db_session.expire_all()
        assert db_session.execute(text("SELECT secret_ciphertext FROM totp_credentials")).scalar_one() == before

    def test_rotate_with_nothing_to_do(self, app):
        result = app.test_cli_runner().invoke(args=["keys", "rotate"])
        assert result.exit_code == 0
        assert "re-encrypted 0 TOTP secret(s)" in result.output
        assert runtime(app).settings.secrets.encryption_keys


def test_openapi_lists_the_operations(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "/v1/password-resets" in paths
    assert "/v1/password-resets/confirm" in paths
    assert set(paths["/v1/accounts/{account_id}/totp"]) >= {"post", "delete"}
    assert "/v1/accounts/{account_id}/totp/confirm" in paths
    assert "/v1/accounts/{account_id}/totp/recovery-codes" in paths
