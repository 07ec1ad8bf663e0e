"""HTTP: password resets (public, token-based) and TOTP enrollment (service clients)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response

from security.accounts.views import account_service
from security.clients.auth import ClientScope
from security.credentials.interfaces import PASSWORD_RESET_HOOKS, TOTP_ENABLED_HOOKS, SecondFactorRejected
from security.credentials.ratelimit import KeyedRateLimits, client_ip, identifier_key, make_limiter
from security.credentials.schemas import (
    RecoveryCodesOut,
    RequiredSecondFactorIn,
    ResetAcceptedOut,
    ResetConfirmIn,
    ResetRequestIn,
    TotpConfirmIn,
    TotpEnrollmentOut,
)
from security.credentials.services import PasswordResetService, SecondFactorService, TotpService
from security.credentials.settings import CredentialSettings, credential_settings
from security.permissions import Scope
from security.runtime import runtime
from security.web.api import operation
from security.web.deps import Deps, deps
from security.web.problems import from_error
from security.web.transaction import respond_no_sooner_than

bp = Blueprint("credentials", __name__)

SETTINGS_KEY = "credentials.settings"
LIMITS_KEY = "credentials.rate_limits"
USER_ACTOR = "user"
"""Reset requests and confirmations come from end users, who have no session."""


class LimitScope:
    RESET_IP = "password-reset:ip"
    RESET_IDENTIFIER = "password-reset:identifier"
    CONFIRM_IP = "password-reset-confirm:ip"


def _settings() -> CredentialSettings:
    value: CredentialSettings = runtime().extras[SETTINGS_KEY]
    return value


def _limits() -> KeyedRateLimits:
    value: KeyedRateLimits = runtime().extras[LIMITS_KEY]
    return value


def second_factor_service(d: Deps) -> SecondFactorService:
    return SecondFactorService(d.session, secret_box=d.secret_box, audit=d.audit, outbox=d.outbox)


def totp_service(d: Deps) -> TotpService:
    return TotpService(
        d.session, clock=d.clock, entropy=d.entropy, secret_box=d.secret_box, audit=d.audit, outbox=d.outbox,
        issuer=_settings().totp_issuer, on_enabled=d.runtime.extras.get(TOTP_ENABLED_HOOKS, ()),
    )


def reset_service(d: Deps) -> PasswordResetService:
    cfg = _settings()
    return PasswordResetService(
        d.session,
        clock=d.clock,
        entropy=d.entropy,
        secret_box=d.secret_box,
        audit=d.audit,
        outbox=d.outbox,
        accounts=account_service(d),
        second_factor=second_factor_service(d),
        identifier_key=d.settings.secrets.identity_hmac_key,
        token_ttl=cfg.reset_token_ttl,
        max_second_factor_failures=cfg.reset_max_second_factor_failures,
        hooks=d.runtime.extras.get(PASSWORD_RESET_HOOKS, ()),
    )


def keep_refusal(error: SecondFactorRejected) -> Response:
    """Answer with ``error`` while letting the request commit the failure it recorded (counters, audit)."""
    return from_error(error)


@operation(
    bp, "/v1/password-resets", method="POST", body=ResetRequestIn, response=ResetAcceptedOut, status=202,
    summary="Request a password reset", tags=["password-resets"],
    errors={429: "Too many requests for this identifier or from this address"},
)
def request_password_reset(body: ResetRequestIn) -> ResetAcceptedOut:
    """Always 202 with the same body, whether or not the identifier (account id, e-mail or E.164 phone)
    names an account. For a real account a 30-minute single-use token goes to its registered e-mail or
    phone, and every older token stops working."""
    cfg = _settings()
    respond_no_sooner_than(cfg.reset_min_response_ms / 1000)
    limits = _limits()
    limits.hit(cfg.reset_requests_per_ip, scope=LimitScope.RESET_IP, key=client_ip())
    limits.hit(
        cfg.reset_requests_per_identifier, scope=LimitScope.RESET_IDENTIFIER, key=identifier_key(body.identifier)
    )
    reset_service(deps()).request(body.identifier, actor=USER_ACTOR)
    return ResetAcceptedOut()


@operation(
    bp, "/v1/password-resets/confirm", method="POST", body=ResetConfirmIn, status=204,
    summary="Set a new password with a reset token", tags=["password-resets"],
    errors={
        400: "invalid_reset_token (unknown, expired, used or tampered: one answer for all), "
        "second_factor_required, or second_factor_rejected",
        429: "Too many attempts from this address",
    },
)
def confirm_password_reset(body: ResetConfirmIn) -> Response | None:
    """Applies the password policy (422 `weak_password`), requires `totp_code` or `recovery_code` when the
    account has TOTP enabled, and announces `password.changed`."""
    _limits().hit(_settings().reset_confirms_per_ip, scope=LimitScope.CONFIRM_IP, key=client_ip())
    outcome = reset_service(deps()).confirm(
        body.token, body.new_password, totp_code=body.totp_code, recovery_code=body.recovery_code,
        actor=USER_ACTOR,
    )
    if not outcome.completed:
        return keep_refusal(SecondFactorRejected())
    return None


@operation(
    bp, "/v1/accounts/<account:account_id>/totp", method="POST", response=TotpEnrollmentOut, status=201,
    auth=ClientScope(Scope.CREDENTIALS_WRITE), summary="Start TOTP enrollment", tags=["totp"],
    errors={409: "TOTP is already enabled"},
)
def start_totp_enrollment(account_id: str) -> TotpEnrollmentOut:
    """Creates a new secret (160 bits, stored encrypted) and returns it with its otpauth:// URI and an SVG
    QR code. Starting again replaces a pending, unconfirmed enrollment."""
    d = deps()
    enrollment = totp_service(d).start_enrollment(account_id, actor=d.actor)
    return TotpEnrollmentOut(secret=enrollment.secret, otpauth_uri=enrollment.otpauth_uri, qr_svg=enrollment.qr_svg)


@operation(
    bp, "/v1/accounts/<account:account_id>/totp/confirm", method="POST", body=TotpConfirmIn,
    response=RecoveryCodesOut, auth=ClientScope(Scope.CREDENTIALS_WRITE), summary="Confirm TOTP enrollment",
    tags=["totp"], errors={400: "invalid_totp_code", 409: "No pending enrollment, or already enabled"},
)
def confirm_totp_enrollment(account_id: str, body: TotpConfirmIn) -> RecoveryCodesOut:
    """Activates TOTP with a first valid code and returns 10 single-use recovery codes, only this once."""
    d = deps()
    codes = totp_service(d).confirm_enrollment(account_id, body.code, actor=d.actor)
    return RecoveryCodesOut(recovery_codes=list(codes))


@operation(
    bp, "/v1/accounts/<account:account_id>/totp", method="DELETE", body=RequiredSecondFactorIn, status=204,
    auth=ClientScope(Scope.CREDENTIALS_WRITE), summary="Disable TOTP", tags=["totp"],
    errors={400: "second_factor_rejected", 409: "TOTP is not enabled"},
)
def disable_totp(account_id: str, body: RequiredSecondFactorIn) -> Response | None:
    """Needs a valid TOTP code or recovery code; a wrong one is counted toward lockout."""
    d = deps()
    result = totp_service(d).disable(
        account_id, totp_code=body.totp_code, recovery_code=body.recovery_code, actor=d.actor
    )
    if not result.accepted:
        return keep_refusal(SecondFactorRejected())
    return None


@operation(
    bp, "/v1/accounts/<account:account_id>/totp/recovery-codes", method="POST", body=RequiredSecondFactorIn,
    response=RecoveryCodesOut, auth=ClientScope(Scope.CREDENTIALS_WRITE), summary="Regenerate recovery codes",
    tags=["totp"], errors={400: "second_factor_rejected", 409: "TOTP is not enabled"},
)
def regenerate_recovery_codes(account_id: str, body: RequiredSecondFactorIn) -> RecoveryCodesOut | Response:
    """Needs a valid TOTP code or recovery code; every previous recovery code stops working."""
    d = deps()
    result, codes = totp_service(d).regenerate_recovery_codes(
        account_id, totp_code=body.totp_code, recovery_code=body.recovery_code, actor=d.actor
    )
    if not result.accepted:
        return keep_refusal(SecondFactorRejected())
    return RecoveryCodesOut(recovery_codes=list(codes))


def init_app(app: Flask) -> None:
    from security.credentials.cli import keys_cli

    rt = runtime(app)
    cfg = credential_settings(rt.settings)  # invalid configuration fails at start, not on first use
    rt.extras[SETTINGS_KEY] = cfg
    rt.extras[LIMITS_KEY] = make_limiter(redis_url=rt.settings.redis.url, key_prefix=cfg.rate_limit_key_prefix)
    rt.extras.setdefault(PASSWORD_RESET_HOOKS, [])
    rt.extras.setdefault(TOTP_ENABLED_HOOKS, [])
    app.register_blueprint(bp)
    app.cli.add_command(keys_cli)
