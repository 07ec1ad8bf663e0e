"""HTTP: appeals (appeal token) and the user's freeze ("not me"). End users have no session or API key.

Views parse, call a service and render. Refusals that must be committed (a wrong code, an exhausted
method, an expired appeal, a refused freeze) come back from the service as values and are answered
with the problem response *returned* (not raised), so the request commits their trace.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import click
from flask import Blueprint, Flask, Response, g, request
from flask.cli import AppGroup

from security.accounts.views import account_service
from security.appeals.interfaces import FreezeOutcome, FreezeRefused, InvalidAppealToken, refusal_error
from security.appeals.models import Appeal
from security.appeals.policy import AppealPolicy, load_policy
from security.appeals.schemas import (
    AcceptedOut,
    AppealCreatedOut,
    AppealIn,
    AppealOut,
    AppealPasswordIn,
    CaseOut,
    DecisionOut,
    FreezeCodeIn,
    FreezeIn,
    FreezeOut,
    MessageIn,
    MessageOut,
    NeededOut,
    RecoveryCodesOut,
    TotpCodeIn,
    TotpEnrollmentOut,
    VerificationDoneOut,
    VerificationIn,
)
from security.appeals.services import (
    USER_ACTOR,
    AppealService,
    AppealSnapshot,
    FreezeService,
    derive_code_key,
    expire_due,
)
from security.appeals.settings import AppealLimits, appeal_limits
from security.audit.services import AuditLog
from security.cli import cli_session
from security.clients.auth import bearer_token
from security.credentials.interfaces import PASSWORD_RESET_HOOKS, SecondFactorRejected
from security.credentials.ratelimit import KeyedRateLimits, client_ip, identifier_key
from security.credentials.views import LIMITS_KEY, second_factor_service, totp_service
from security.locks.services import LockService
from security.runtime import runtime
from security.web import openapi
from security.web.api import operation
from security.web.deps import Deps, deps
from security.web.problems import from_error
from security.web.transaction import respond_no_sooner_than

bp = Blueprint("appeals", __name__)

POLICY_KEY = "appeals.policy"
LIMITS_SETTINGS_KEY = "appeals.limits"
SECURITY_SCHEME = "appealToken"
ACCEPTED_DETAIL = "If the identifier belongs to an account, a code was sent to its registered contact."


class Scopes:
    APPEAL_IP = "appeal:ip"
    APPEAL_IDENTIFIER = "appeal:identifier"
    VERIFY_IP = "appeal-verify:ip"
    MESSAGE_IP = "appeal-message:ip"
    FREEZE_CODE_IP = "freeze-code:ip"
    FREEZE_CODE_IDENTIFIER = "freeze-code:identifier"
    FREEZE_IP = "freeze:ip"
    FREEZE_IDENTIFIER = "freeze:identifier"


class AppealToken:
    """``Authorization: Bearer <appeal token>`` matched against the appeal named in the path.

    Runs before the body is validated, so a caller without the right token learns nothing else.
    """

    def authenticate(self) -> str:
        appeal_id = (request.view_args or {}).get("appeal_id")
        if not isinstance(appeal_id, uuid.UUID):
            raise InvalidAppealToken("Send the appeal token as 'Authorization: Bearer <appeal token>'.")
        g.appeal = appeal_service(deps()).authenticate(appeal_id, bearer_token())
        return USER_ACTOR

    def openapi_security(self) -> list[dict[str, list[str]]]:
        return [{SECURITY_SCHEME: []}]

    def describe(self) -> str:
        return "the appeal token returned by POST /v1/appeals"


APPEAL_TOKEN = AppealToken()


def policy() -> AppealPolicy:
    value: AppealPolicy = runtime().extras[POLICY_KEY]
    return value


def _limits_settings() -> AppealLimits:
    value: AppealLimits = runtime().extras[LIMITS_SETTINGS_KEY]
    return value


def _rate_limits() -> KeyedRateLimits:
    value: KeyedRateLimits = runtime().extras[LIMITS_KEY]
    return value


def lock_service(d: Deps) -> LockService:
    return LockService(d.session, clock=d.clock, entropy=d.entropy, audit=d.audit, outbox=d.outbox)


def appeal_service(d: Deps) -> AppealService:
    """The appeal service of this request (also for the operators' review API and console)."""
    return AppealService(
        d.session, clock=d.clock, entropy=d.entropy, audit=d.audit, outbox=d.outbox, policy=policy(),
        locks=lock_service(d), accounts=account_service(d), second_factor=second_factor_service(d),
        totp=totp_service(d), secret_box=d.secret_box, code_key=derive_code_key(d.settings.app.secret_key),
        identity_key=d.settings.secrets.identity_hmac_key,
        password_reset_hooks=d.runtime.extras.get(PASSWORD_RESET_HOOKS, ()),
    )


def freeze_service(d: Deps) -> FreezeService:
    return FreezeService(
        d.session, clock=d.clock, entropy=d.entropy, audit=d.audit, outbox=d.outbox, policy=policy(),
        locks=lock_service(d), accounts=account_service(d), secret_box=d.secret_box,
        code_key=derive_code_key(d.settings.app.secret_key),
    )


def render(snapshot: AppealSnapshot) -> AppealOut:
    needed = snapshot.needed
    return AppealOut(
        appeal_id=snapshot.appeal_id, state=snapshot.state, created_at=snapshot.created_at,
        expires_at=snapshot.expires_at, notice=snapshot.notice,
        case=CaseOut(reference=snapshot.case.reference, reason=snapshot.case.reason,
                     details=list(snapshot.case.details)) if snapshot.case else None,
        verifications=[VerificationDoneOut(method=m, verified_at=at) for m, at in snapshot.verifications],
        needed=NeededOut(
            next_step=cast(Any, needed.next_step), verifications=[list(g) for g in needed.verifications],
            approvals_required=needed.approvals_required, approvals_given=needed.approvals_given,
            actions=list(needed.actions),
        ),
        messages=[MessageOut(author=cast(Any, m.author), body=m.body, created_at=m.created_at)
                  for m in snapshot.messages],
        decision=DecisionOut(outcome=cast(Any, snapshot.decision.outcome), reason=snapshot.decision.reason,
                             decided_at=snapshot.decision.decided_at) if snapshot.decision else None,
    )


def _authorized(service: AppealService, appeal_id: uuid.UUID) -> Appeal:
    """The appeal the request's token opened (checked by :class:`AppealToken` before anything else)."""
    appeal: Appeal | None = g.get("appeal")
    if appeal is None or appeal.id != appeal_id:
        return service.authenticate(appeal_id, bearer_token())
    return appeal


# --- appeals ---------------------------------------------------------------------------------------


@operation(
    bp, "/v1/appeals", method="POST", body=AppealIn, response=AppealCreatedOut, status=202,
    summary="Appeal a lock", tags=["appeals"], errors={429: "Too many appeals for this identifier or address"},
)
def submit_appeal(body: AppealIn) -> AppealCreatedOut:
    """Always 202 with an appeal id and token, whether or not the identifier names a (locked) account.
    For a locked account a one-time code goes to its registered e-mail or phone. Keep the token: it is
    shown only here and is needed for every further step."""
    cfg = _limits_settings()
    respond_no_sooner_than(cfg.min_response_ms / 1000)
    limits = _rate_limits()
    limits.hit(cfg.appeals_per_ip, scope=Scopes.APPEAL_IP, key=client_ip())
    limits.hit(cfg.appeals_per_identifier, scope=Scopes.APPEAL_IDENTIFIER, key=identifier_key(body.identifier))
    appeal, token = appeal_service(deps()).submit(body.identifier, body.statement, actor=USER_ACTOR)
    return AppealCreatedOut(appeal_id=appeal.id, appeal_token=token)


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>", method="GET", response=AppealOut, auth=APPEAL_TOKEN,
    summary="Read an appeal", tags=["appeals"],
    errors={401: "invalid_appeal_token: unknown appeal, wrong token or another appeal's token (one answer)"},
)
def get_appeal(appeal_id: uuid.UUID) -> AppealOut:
    """State, what is still needed, messages and the decision. The lock's case reference and reasons
    appear once the contact code proved possession of the account. Reading an appeal also records what
    time changed (an expiry that came due, a lock released elsewhere)."""
    service = appeal_service(deps())
    appeal = service.refresh(_authorized(service, appeal_id))
    return render(service.snapshot(appeal))


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/verifications", method="POST", body=VerificationIn, response=AppealOut,
    auth=APPEAL_TOKEN, summary="Prove identity, one step at a time", tags=["appeals"],
    errors={
        400: "verification_failed (with attempts_left) or code_expired",
        401: "invalid_appeal_token",
        409: "verification_not_needed, verification_attempts_exhausted, appeal_expired or appeal_closed",
        429: "Too many requests from this address",
    },
)
def post_verification(appeal_id: uuid.UUID, body: VerificationIn) -> AppealOut | Response:
    """Methods: `contact_code` (first, always), then as the lock kind requires: `totp`, `recovery_code`,
    `recent_transaction` (amount within 1 % and UTC day of one of the last 10 transactions),
    `identity_document`. Every attempt is audited and counted against per-method and per-appeal limits."""
    d = deps()
    _rate_limits().hit(_limits_settings().verifications_per_ip, scope=Scopes.VERIFY_IP, key=client_ip())
    service = appeal_service(d)
    appeal = _authorized(service, appeal_id)
    result = service.verify(appeal, body.method, code=body.code, amount=body.decimal_amount, day=body.date,
                            document=body.document, actor=USER_ACTOR)
    if not result.accepted:
        return from_error(refusal_error(result))  # returned, not raised: the attempt is committed
    return render(service.snapshot(appeal))


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/codes", method="POST", response=AcceptedOut, status=202,
    auth=APPEAL_TOKEN, summary="Send a new contact code", tags=["appeals"],
    errors={401: "invalid_appeal_token", 409: "too_many_codes or verification_not_needed"},
)
def resend_code(appeal_id: uuid.UUID) -> AcceptedOut:
    """The previous code stops working. Limited per appeal."""
    service = appeal_service(deps())
    service.resend_code(_authorized(service, appeal_id))
    return AcceptedOut(detail=ACCEPTED_DETAIL)


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/messages", method="POST", body=MessageIn, response=AppealOut, status=201,
    auth=APPEAL_TOKEN, summary="Write to the operators", tags=["appeals"],
    errors={401: "invalid_appeal_token", 409: "too_many_messages"},
)
def post_message(appeal_id: uuid.UUID, body: MessageIn) -> AppealOut:
    """The conversation is kept on the record and shown to both sides."""
    _rate_limits().hit(_limits_settings().messages_per_ip, scope=Scopes.MESSAGE_IP, key=client_ip())
    service = appeal_service(deps())
    appeal = _authorized(service, appeal_id)
    service.post_user_message(appeal, body.body)
    return render(service.snapshot(appeal))


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/withdraw", method="POST", response=AppealOut,
    auth=APPEAL_TOKEN, summary="Withdraw an appeal", tags=["appeals"],
    errors={401: "invalid_appeal_token", 409: "invalid_appeal_transition: already decided or closed"},
)
def withdraw_appeal(appeal_id: uuid.UUID) -> AppealOut:
    """Possible until a decision. The lock stays in place and can be appealed again."""
    service = appeal_service(deps())
    appeal = _authorized(service, appeal_id)
    service.withdraw(appeal)
    return render(service.snapshot(appeal))


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/password", method="POST", body=AppealPasswordIn, response=AppealOut,
    auth=APPEAL_TOKEN, summary="Reset the password after approval", tags=["appeals"],
    errors={400: "second_factor_required or second_factor_rejected", 401: "invalid_appeal_token",
            409: "action_not_pending", 422: "weak_password"},
)
def reset_password(appeal_id: uuid.UUID, body: AppealPasswordIn) -> AppealOut | Response:
    """Completes the `reset_password` required action without an e-mail round trip (identity was proven in
    the appeal). Without an operator review (brute-force locks), an account with TOTP enabled also needs
    `totp_code` or `recovery_code`. The lock is released once every required action is done."""
    service = appeal_service(deps())
    appeal = _authorized(service, appeal_id)
    refused = service.reset_password(appeal, body.new_password, totp_code=body.totp_code,
                                     recovery_code=body.recovery_code)
    if refused is not None:
        return from_error(SecondFactorRejected())  # returned, not raised: the failure is counted
    return render(service.snapshot(appeal))


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/totp", method="POST", response=TotpEnrollmentOut, status=201,
    auth=APPEAL_TOKEN, summary="Start authenticator enrollment after approval", tags=["appeals"],
    errors={401: "invalid_appeal_token", 409: "action_not_pending"},
)
def start_totp(appeal_id: uuid.UUID) -> TotpEnrollmentOut:
    """For the `enroll_totp` required action. An authenticator already enabled is replaced."""
    service = appeal_service(deps())
    enrollment = service.start_totp(_authorized(service, appeal_id))
    return TotpEnrollmentOut(secret=enrollment.secret, otpauth_uri=enrollment.otpauth_uri, qr_svg=enrollment.qr_svg)


@operation(
    bp, "/v1/appeals/<uuid:appeal_id>/totp/confirm", method="POST", body=TotpCodeIn, response=RecoveryCodesOut,
    auth=APPEAL_TOKEN, summary="Confirm the authenticator after approval", tags=["appeals"],
    errors={400: "invalid_totp_code", 401: "invalid_appeal_token", 409: "action_not_pending or totp_not_pending"},
)
def confirm_totp(appeal_id: uuid.UUID, body: TotpCodeIn) -> RecoveryCodesOut:
    """Completes `enroll_totp`; returns 10 recovery codes, only this once."""
    service = appeal_service(deps())
    codes = service.confirm_totp(_authorized(service, appeal_id), body.code)
    return RecoveryCodesOut(recovery_codes=list(codes))


# --- freeze ----------------------------------------------------------------------------------------


@operation(
    bp, "/v1/freeze/codes", method="POST", body=FreezeCodeIn, response=AcceptedOut, status=202,
    summary="Ask for a code to freeze an account", tags=["freeze"],
    errors={429: "Too many requests for this identifier or from this address"},
)
def request_freeze_code(body: FreezeCodeIn) -> AcceptedOut:
    """Always 202 with the same body. For a real account a one-time code goes to its registered contact."""
    cfg = _limits_settings()
    respond_no_sooner_than(cfg.min_response_ms / 1000)
    limits = _rate_limits()
    limits.hit(cfg.freeze_codes_per_ip, scope=Scopes.FREEZE_CODE_IP, key=client_ip())
    limits.hit(cfg.freeze_codes_per_identifier, scope=Scopes.FREEZE_CODE_IDENTIFIER,
               key=identifier_key(body.identifier))
    freeze_service(deps()).send_code(body.identifier, actor=USER_ACTOR)
    return AcceptedOut(detail=ACCEPTED_DETAIL)


@operation(
    bp, "/v1/freeze", method="POST", body=FreezeIn, response=FreezeOut,
    summary="Freeze my account now (\"not me\")", tags=["freeze"],
    errors={400: "freeze_refused: unknown identifier, wrong password or wrong code (one answer)",
            429: "Too many requests for this identifier or from this address"},
)
def freeze(body: FreezeIn) -> FreezeOut | Response:
    """Proves possession with the password or a code from `POST /v1/freeze/codes`, then locks the account at
    once (kind `user_reported`) and tells the wallet (`account.locked`). Freezing a frozen account returns
    the existing case reference. To get the account back, appeal the lock."""
    cfg = _limits_settings()
    respond_no_sooner_than(cfg.min_response_ms / 1000)
    limits = _rate_limits()
    limits.hit(cfg.freezes_per_ip, scope=Scopes.FREEZE_IP, key=client_ip())
    limits.hit(cfg.freezes_per_identifier, scope=Scopes.FREEZE_IDENTIFIER, key=identifier_key(body.identifier))
    result = freeze_service(deps()).freeze(body.identifier, password=body.password, code=body.code,
                                           reason=body.reason, actor=USER_ACTOR)
    if result.outcome is FreezeOutcome.REFUSED or result.reference is None:
        return from_error(FreezeRefused())  # returned, not raised: the failed attempt is committed
    return FreezeOut(reference=result.reference)


# --- wiring ----------------------------------------------------------------------------------------


def _security_scheme(document: dict[str, Any]) -> None:
    document["components"]["securitySchemes"][SECURITY_SCHEME] = {
        "type": "http", "scheme": "bearer", "description": "The appeal token returned by POST /v1/appeals",
    }


appeals_cli = AppGroup("appeals", help="Appeals housekeeping.")


@appeals_cli.command("expire")
@click.option("--limit", default=500, show_default=True, help="Most appeals expired in one run")
def expire_command(limit: int) -> None:
    """Expire appeals that were not verified in time."""
    rt = runtime()
    with cli_session() as session:
        count = expire_due(session, clock=rt.clock, audit=AuditLog(session, clock=rt.clock), limit=limit)
    click.echo(f"expired {count} appeal(s)")


def init_app(app: Flask) -> None:
    rt = runtime(app)
    limits = appeal_limits(rt.settings)  # invalid configuration fails at start, not on first use
    rt.extras[LIMITS_SETTINGS_KEY] = limits
    rt.extras[POLICY_KEY] = load_policy(limits.policy_path)
    if _security_scheme not in openapi.EXTRA_SECTIONS:
        openapi.EXTRA_SECTIONS.append(_security_scheme)
    app.register_blueprint(bp)
    app.cli.add_command(appeals_cli)
