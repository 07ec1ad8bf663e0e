"""HTTP: the login check, event ingestion (single and batch) and the deny list. Parse, call, render."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from flask import Blueprint, Flask
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from security.accounts.views import account_service
from security.clients.auth import ClientScope, client_confirmed, current_client, owed_client_id
from security.credentials.interfaces import PASSWORD_RESET_HOOKS, TOTP_ENABLED_HOOKS
from security.errors import Conflict, FoxguardError, InvalidInput
from security.locks.services import LockService
from security.locks.states import RequiredAction
from security.permissions import Scope
from security.risk.denylist import DenyListService
from security.risk.features import EventKind
from security.risk.models import DenyListEntry, DenyListKind
from security.risk.rules import RuleSet, load_ruleset
from security.risk.schemas import (
    AccountChangeEventIn,
    BatchError,
    BatchIn,
    BatchItemOut,
    BatchOut,
    DecisionOut,
    EventDecisionOut,
    LoginCheckIn,
    LoginEventIn,
    TransactionEventIn,
)
from security.risk.second_factor import CredentialsSecondFactor, SecondFactorVerifier
from security.risk.services import RiskService
from security.runtime import runtime
from security.web.api import operation, validation_problem
from security.web.deps import Deps, deps
from security.web.openapi import Trimmed
from security.web.transaction import end_read_phase

bp = Blueprint("risk", __name__)

RULESET_KEY: Final = "risk.ruleset"
DEFAULT_RULES_FILE: Final = "config/rules.toml"
ROOT: Final = Path(__file__).resolve().parents[2]
EVENT_MODELS: Final[dict[str, tuple[EventKind, type[BaseModel]]]] = {
    "login": (EventKind.LOGIN, LoginEventIn),
    "transaction": (EventKind.TRANSACTION, TransactionEventIn),
    "account_change": (EventKind.ACCOUNT_CHANGE, AccountChangeEventIn),
}


def rules_path(settings_section: dict[str, Any]) -> Path:
    """Return the configured rule file (``[risk] rules_file``, relative to the project root)."""
    path = Path(str(settings_section.get("rules_file", DEFAULT_RULES_FILE)))
    return path if path.is_absolute() else ROOT / path


def current_ruleset() -> RuleSet:
    """Return the rule set loaded at start-up."""
    ruleset: RuleSet = runtime().extras[RULESET_KEY]
    return ruleset


def lock_service(d: Deps) -> LockService:
    return LockService(d.session, clock=d.clock, entropy=d.entropy, audit=d.audit, outbox=d.outbox)


def login_second_factor(d: Deps) -> SecondFactorVerifier:
    """The second-factor check the login check uses: the credentials slice's TOTP and recovery codes."""
    return CredentialsSecondFactor(d.session, secret_box=d.secret_box, audit=d.audit, outbox=d.outbox)


def complete_reset_password_action(session: Session, *, account_id: str, at: datetime, actor: str) -> None:
    """Password-reset hook: a reset completes a pending ``reset_password`` action (and ends brute-force
    locks); the lock is released once nothing else is required."""
    lock_service(deps()).complete_action(account_id, RequiredAction.RESET_PASSWORD, actor=actor)


def complete_enroll_totp_action(session: Session, *, account_id: str, at: datetime, actor: str) -> None:
    """TOTP-enabled hook: activating an authenticator completes a pending ``enroll_totp`` action."""
    lock_service(deps()).complete_action(account_id, RequiredAction.ENROLL_TOTP, actor=actor)


def risk_service(d: Deps, *, check_client: bool = False) -> RiskService:
    """``check_client``: the service checks the request's owed client check in the account's row lock
    (see ``security.clients.auth``); report it with :func:`_report_client_check`."""
    return RiskService(
        d.session, clock=d.clock, audit=d.audit, outbox=d.outbox, ruleset=current_ruleset(),
        locks=lock_service(d), accounts=account_service(d), second_factor=login_second_factor(d),
        owed_client=owed_client_id() if check_client else None,
    )


def _report_client_check(service: RiskService) -> None:
    if service.client_checked:
        client_confirmed(active=True)


@operation(
    bp, "/v1/logins", method="POST", body=LoginCheckIn, response=DecisionOut,
    auth=ClientScope(Scope.LOGINS_CHECK, confirm_in_transaction=True),
    summary="Check a login: verify credentials and score the attempt",
    errors={429: "Too many failed logins from this IP address (Retry-After)"}, tags=["risk"],
)
def check_login(body: LoginCheckIn) -> DecisionOut:
    """`decision` is allow | mfa_required | deny. Failed attempts feed brute-force protection. A locked
    account is denied without revealing whether the password was right."""
    service = risk_service(deps(), check_client=True)
    # The reads first, then the password work outside the transaction (see end_read_phase), then the rest.
    stored = service.stored_password(body)
    end_read_phase()
    checked = service.verify_password(stored, body.password)
    outcome = service.check_login(body, client_id=current_client().id, checked=checked)
    _report_client_check(service)
    return DecisionOut.model_validate(outcome.as_answer())


def _ingest(kind: EventKind, body: LoginEventIn | TransactionEventIn | AccountChangeEventIn) -> EventDecisionOut:
    service = risk_service(deps(), check_client=True)
    answer, _ = service.ingest(kind, body, client_id=current_client().id)
    _report_client_check(service)
    return EventDecisionOut.model_validate(answer)


IDEMPOTENCY_ERRORS: Final = {404: "Unknown account", 409: "event_id reused with a different body"}


@operation(bp, "/v1/events/login", method="POST", body=LoginEventIn, response=EventDecisionOut,
           auth=ClientScope(Scope.EVENTS_WRITE, confirm_in_transaction=True),
           summary="Record a login the backend authenticated itself",
           errors=IDEMPOTENCY_ERRORS, tags=["risk"])
def login_event(body: LoginEventIn) -> EventDecisionOut:
    """Scored like the login check; failures feed brute-force protection. Idempotent per `event_id`."""
    return _ingest(EventKind.LOGIN, body)


@operation(bp, "/v1/events/transaction", method="POST", body=TransactionEventIn, response=EventDecisionOut,
           auth=ClientScope(Scope.EVENTS_WRITE, confirm_in_transaction=True),
           summary="Assess an outgoing transaction",
           errors=IDEMPOTENCY_ERRORS, tags=["risk"])
def transaction_event(body: TransactionEventIn) -> EventDecisionOut:
    """`decision` is allow | review | block. Amounts are decimal strings. Idempotent per `event_id`."""
    return _ingest(EventKind.TRANSACTION, body)


@operation(bp, "/v1/events/account-change", method="POST", body=AccountChangeEventIn,
           response=EventDecisionOut,
           auth=ClientScope(Scope.EVENTS_WRITE, confirm_in_transaction=True),
           summary="Assess an account change (e-mail, phone, password, MFA, device)",
           errors=IDEMPOTENCY_ERRORS, tags=["risk"])
def account_change_event(body: AccountChangeEventIn) -> EventDecisionOut:
    """`decision` is allow | review | block. Idempotent per `event_id`."""
    return _ingest(EventKind.ACCOUNT_CHANGE, body)


def _error(exc: FoxguardError) -> BatchError:
    return BatchError(status=exc.status, code=exc.code, detail=exc.detail, errors=exc.errors)


@operation(bp, "/v1/events:batch", method="POST", body=BatchIn, response=BatchOut,
           auth=ClientScope(Scope.EVENTS_WRITE), summary="Record up to 500 events", tags=["risk"])
def batch(body: BatchIn) -> BatchOut:
    """Each item is `{"type": "login" | "transaction" | "account_change", ...that event's fields}`.
    Items are validated and stored one by one: valid items are stored even when others fail, and every
    item gets its own result or error (same shape as the single-event endpoints)."""
    d = deps()
    service = risk_service(d)
    client_id = current_client().id
    results: list[BatchItemOut] = []
    for index, raw in enumerate(body.events):
        item: dict[str, Any] = raw if isinstance(raw, dict) else {}
        raw_type = item.get("type")
        event_id = item.get("event_id") if isinstance(item.get("event_id"), str) else None
        type_name = raw_type if isinstance(raw_type, str) else None
        if type_name not in EVENT_MODELS:
            error = InvalidInput("Each item is an object with a type: login, transaction or account_change.",
                                 errors=[{"field": "type", "message": "unknown or missing event type"}])
            results.append(BatchItemOut(index=index, event_id=event_id, type=type_name, ok=False,
                                        error=_error(error)))
            continue
        kind, model = EVENT_MODELS[type_name]
        try:
            # JSON's own types, as for a single event (``security.web.api.validate_json``).
            parsed = model.model_validate_json(json.dumps({k: v for k, v in item.items() if k != "type"}),
                                               strict=True)
        except ValidationError as exc:
            results.append(BatchItemOut(index=index, event_id=event_id, type=type_name, ok=False,
                                        error=_error(validation_problem(exc, f"events.{index}"))))
            continue
        try:
            with d.session.begin_nested():
                answer, _ = service.ingest(kind, parsed, client_id=client_id)  # type: ignore[arg-type]
        except (FoxguardError, IntegrityError, StaleDataError) as exc:
            # The savepoint undid this item's rows, outbox messages and audit entries (the audit log
            # drops entries recorded inside a rolled-back savepoint).
            failure = exc if isinstance(exc, FoxguardError) else Conflict("The event conflicts with stored data.")
            results.append(BatchItemOut(index=index, event_id=event_id, type=type_name, ok=False,
                                        error=_error(failure)))
            continue
        results.append(BatchItemOut(index=index, event_id=event_id, type=type_name, ok=True,
                                    result=EventDecisionOut.model_validate(answer)))
    accepted = sum(1 for r in results if r.ok)
    return BatchOut(accepted=accepted, rejected=len(results) - accepted, results=results)


# --- deny list ----------------------------------------------------------------------------------

class DenyListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Trimmed(500, min_length=1)]
    expires_at: AwareDatetime | None = None


class DenyListOut(BaseModel):
    kind: str
    value: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None


class DenyListPage(BaseModel):
    entries: list[DenyListOut]


class DenyListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["ip", "address"] | None = None


def _entry(entry: DenyListEntry) -> DenyListOut:
    return DenyListOut(kind=entry.kind, value=entry.value, reason=entry.reason, created_by=entry.created_by,
                       created_at=entry.created_at, expires_at=entry.expires_at)


def deny_list_service(d: Deps) -> DenyListService:
    return DenyListService(d.session, clock=d.clock, audit=d.audit)


def _kind(kind: str) -> DenyListKind:
    try:
        return DenyListKind(kind)
    except ValueError:
        raise InvalidInput("kind is 'ip' or 'address'.",
                           errors=[{"field": "kind", "message": "ip or address"}]) from None


@operation(bp, "/v1/deny-list", method="GET", query=DenyListQuery, response=DenyListPage,
           auth=ClientScope(Scope.DENYLIST_READ), summary="List deny-listed IPs and addresses", tags=["risk"])
def list_deny_list(query: DenyListQuery) -> DenyListPage:
    entries = deny_list_service(deps()).list(DenyListKind(query.kind) if query.kind else None)
    return DenyListPage(entries=[_entry(e) for e in entries])


@operation(bp, "/v1/deny-list/<any(ip,address):kind>/<value>", method="PUT", body=DenyListIn, response=DenyListOut,
           auth=ClientScope(Scope.DENYLIST_WRITE), summary="Deny-list an IP address or destination address",
           tags=["risk"], also=[201])
def put_deny_list(kind: str, value: str, body: DenyListIn) -> tuple[DenyListOut, int]:
    d = deps()
    entry, created = deny_list_service(d).put(_kind(kind), value, reason=body.reason, actor=d.actor,
                                              expires_at=body.expires_at)
    return _entry(entry), 201 if created else 200


@operation(bp, "/v1/deny-list/<any(ip,address):kind>/<value>", method="DELETE", status=204,
           auth=ClientScope(Scope.DENYLIST_WRITE), summary="Remove a deny-list entry", tags=["risk"])
def delete_deny_list(kind: str, value: str) -> None:
    d = deps()
    deny_list_service(d).remove(_kind(kind), value, actor=d.actor)


def init_app(app: Flask) -> None:
    """Load and validate the rule file once (the app refuses to start with a bad one) and register routes."""
    settings = runtime(app).settings
    runtime(app).extras[RULESET_KEY] = load_ruleset(rules_path(settings.section("risk")))
    runtime(app).extras.setdefault(PASSWORD_RESET_HOOKS, []).append(complete_reset_password_action)
    runtime(app).extras.setdefault(TOTP_ENABLED_HOOKS, []).append(complete_enroll_totp_action)
    app.register_blueprint(bp)
    from security.risk import cli

    cli.init_app(app)
