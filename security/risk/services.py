"""Risk use cases: the login check and event ingestion (no Flask; the caller commits).

Each use case: features from history (``FeatureStore``) -> pure engine -> account state, second factor
and brute-force policy -> locks/restrictions through ``LockService`` (capped by the auto-lock guard) ->
one stored event, one assessment with a record per rule, audit entries and outbox messages, all in the
caller's transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, NamedTuple

from pydantic import BaseModel
from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from uuid6 import uuid7

from security.accounts.models import Account
from security.accounts.services import AccountService
from security.audit.services import AuditLog
from security.clients.services import CLIENT_ACTIVE, REVOKED_MESSAGE, ClientRevoked
from security.clock import Clock, utc
from security.credentials.passwords import Verification
from security.db import DriverStatement, is_sqlite, table_of
from security.delivery.outbox import Outbox
from security.errors import AccountNotFound, Conflict, InvalidInput, TooManyRequests
from security.locks.bruteforce import FailureState, ip_throttle, register_failure, register_success
from security.locks.models import Lock, LoginFailureCounter
from security.locks.services import LockService
from security.locks.states import AccountStatus, LockKind, RequiredAction
from security.risk.engine import Assessment, Reason, evaluate
from security.risk.familiarity import UNKNOWN, parse_user_agent
from security.risk.feature_store import Context, FeatureStore, Probe, TransactionInput, stored_answer
from security.risk.features import FEATURE_TYPES, EventKind, Features, FeatureType, FeatureValue
from security.risk.models import Assessment as AssessmentRow
from security.risk.models import LoginOutcome, RiskAlert, RiskEvent
from security.risk.rules import ActionType, Decision, RuleSet
from security.risk.schemas import (
    AccountChangeEventIn,
    ContextIn,
    LoginCheckIn,
    LoginEventIn,
    TransactionEventIn,
)
from security.risk.second_factor import SecondFactorOutcome, SecondFactorVerifier

SYSTEM_ACTOR: Final = "system:risk"
#: Arbitrary constant naming the PostgreSQL advisory lock that serialises the auto-lock guard.
GUARD_LOCK_KEY: Final = 0x46475244  # "FGRD"
#: Events claiming to happen further in the future than this are refused (clock skew allowance).
MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
SECRET_FIELDS: Final = frozenset({"password", "totp_code", "recovery_code"})
#: The e-mail/SMS telling the owner about a sign-in from a new device (security/delivery/templates).
NEW_DEVICE_TEMPLATE: Final = "new_device_login"
# Built once: the hot path executes them as they are (no statement construction, a memoised cache key).
# Every column is given (see RiskService._record), so the statements compile without parameters.
EVENT_INSERT: Final = DriverStatement(insert(table_of(RiskEvent)))
ASSESSMENT_INSERT: Final = DriverStatement(insert(table_of(AssessmentRow)))
#: The account's password hash (read without a lock, before the password work).
PASSWORD_HASH: Final = DriverStatement(select(Account.password_hash).where(Account.id == bindparam("id")))


#: The account's brute-force failure counter (no row until its first failure), read by its account id
#: (:meth:`RiskService._counter`).
_COUNTER = table_of(LoginFailureCounter)
_COUNTER_STATE = select(_COUNTER.c.failures, _COUNTER.c.window_started_at, _COUNTER.c.temporary_locks,
                        _COUNTER.c.last_lock_at).where(_COUNTER.c.account_id == bindparam("account_id"))
COUNTER_STATE: Final = DriverStatement(_COUNTER_STATE)
#: The same, row-locked until the transaction ends: it serialises the attempts on one account id, also
#: on an id with no account to lock.
COUNTER_STATE_FOR_UPDATE: Final = DriverStatement(_COUNTER_STATE.with_for_update())
#: A counter's first row, and a later state of it (every column given).
COUNTER_INSERT: Final = DriverStatement(insert(_COUNTER))
COUNTER_UPDATE: Final = DriverStatement(
    update(_COUNTER).where(_COUNTER.c.account_id == bindparam("id")).values(
        {name: bindparam(name) for name in ("failures", "window_started_at", "temporary_locks", "last_lock_at",
                                            "updated_at")}))

#: The account, row-locked until the transaction ends.
ACCOUNT_FOR_UPDATE: Final = select(Account).where(Account.id == bindparam("id")).with_for_update()
#: The same, and whether the request's API client is still active (the check its key owes when it was
#: recognised from the key cache; ``security.clients.auth``): one round trip for both. Nothing else can
#: join this statement: its snapshot is taken before it waits for the lock, so it would miss what the
#: lock's previous holder committed (the account's failure counter, its events); the statements after it
#: see that.
ACCOUNT_FOR_UPDATE_AND_CLIENT: Final = (
    select(Account, CLIENT_ACTIVE).where(Account.id == bindparam("id")).with_for_update(of=Account))
#: What a transaction event reads of its account, with the same row lock as :data:`ACCOUNT_FOR_UPDATE`
#: (see :class:`LockedAccount`), and the same with the owed client check.
_ACCOUNT_FACTS = select(Account.id, Account.status, Account.home_country, Account.created_at,
                        Account.password_changed_at).where(Account.id == bindparam("id"))
ACCOUNT_FACTS_FOR_UPDATE: Final = DriverStatement(_ACCOUNT_FACTS.with_for_update())
ACCOUNT_FACTS_FOR_UPDATE_AND_CLIENT: Final = DriverStatement(
    _ACCOUNT_FACTS.add_columns(CLIENT_ACTIVE).with_for_update(of=Account))
#: What an earlier event with this client's ``event_id`` stored (the idempotent replay).
STORED_ANSWER: Final = select(RiskEvent.request_hash, RiskEvent.response, RiskEvent.kind).where(
    RiskEvent.client_id == bindparam("client_id"), RiskEvent.event_id == bindparam("event_id"))


class LockedAccount(NamedTuple):
    """A transaction event's account, row-locked, as its columns (:data:`ACCOUNT_FACTS_FOR_UPDATE`).

    Most transactions of an active account change nothing about the account, and loading it through the
    ORM cost more CPU than the rest of the lookup; the ORM object is loaded (``session.get``: the row is
    locked already) only when the account is locked or restricted or the rules ask for an action.
    """

    id: str
    status: str
    home_country: str | None
    created_at: datetime
    password_changed_at: datetime | None


class Rule(StrEnum):
    """Reasons the service adds on top of the engine's rules."""

    INVALID_CREDENTIALS = "login.invalid_credentials"
    SECOND_FACTOR_REQUIRED = "login.second_factor_required"
    SECOND_FACTOR_VERIFIED = "login.second_factor_verified"
    ACCOUNT_LOCKED = "account.locked"
    ACCOUNT_RESTRICTED = "account.restricted"
    BRUTE_FORCE_LOCK = "bruteforce.account_locked"
    GUARD = "guard.auto_lock_cap"


class AuditTag(StrEnum):
    GUARD_TRIPPED = "risk:guard:tripped"
    TRANSACTION_BLOCKED = "risk:transaction:blocked"


class WebhookEvent(StrEnum):
    TRANSACTION_BLOCKED = "transaction.blocked"
    LOGIN_NEW_DEVICE = "login.new_device"
    OPERATOR_ALERT = "operator.alert"


class IpThrottled(TooManyRequests):
    """Too many failed logins from this IP address across accounts (credential stuffing)."""

    code = "ip_throttled"
    title = "Too many failed logins from this address; retry later"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "This event_id was already used with a different body"


class EventInFuture(InvalidInput):
    code = "occurred_at_in_future"
    title = "occurred_at lies in the future"


@dataclass(frozen=True)
class StoredPassword:
    """An account's password hash as read before a login check's write transaction (None: no account, or
    no password)."""

    account_id: str
    password_hash: str | None
    at: datetime  # when the login check began


@dataclass(frozen=True)
class PasswordCheck:
    """The result of verifying a password against a :class:`StoredPassword`."""

    stored: StoredPassword
    result: Verification


@dataclass
class Outcome:
    """What a use case decided, ready to render."""

    decision: Decision
    assessment: Assessment
    account_status: str
    reasons: list[Reason] = field(default_factory=list)
    lock: Lock | None = None
    # The id the stored assessment row gets. Known before the row is written, so a lock placed because
    # of this assessment can name it (``Lock.assessment_id``: the review queue ranks the lock by it).
    # Time-ordered (UUIDv7), like the event's: see ``_record``.
    assessment_id: uuid.UUID = field(default_factory=uuid7)

    def as_answer(self) -> dict[str, Any]:
        """Return the JSON answer (also stored for idempotent replays)."""
        return {
            "decision": str(self.decision),
            "risk": {"score": self.assessment.score, "band": self.assessment.band},
            "reasons": [{"rule": r.rule, "points": r.points, "detail": r.detail} for r in self.reasons],
            "account": {"status": self.account_status},
            "lock": None if self.lock is None else {
                "reference": self.lock.reference, "kind": self.lock.kind,
                "expires_at": self.lock.expires_at.isoformat() if self.lock.expires_at else None,
            },
            "assessment_id": str(self.assessment_id),
        }


def request_hash(body: BaseModel) -> str:
    """Return the SHA-256 of the body's canonical JSON (key order and whitespace do not matter)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def features_to_json(features: Features) -> dict[str, Any]:
    """Return the features as stored with an assessment (Decimals as strings, exact)."""
    return {
        "values": {k: (str(v) if isinstance(v, Decimal) else v) for k, v in features.values.items()},
        "errors": dict(features.errors),
        "explanations": dict(features.explanations),
    }


def features_from_json(data: Mapping[str, Any]) -> Features:
    """Rebuild stored features (numbers stored as strings become Decimals again)."""
    values: dict[str, FeatureValue] = {}
    for name, value in dict(data.get("values", {})).items():
        if name not in FEATURE_TYPES:
            continue  # a feature that no longer exists cannot be referenced by a valid rule file
        if FEATURE_TYPES[name] is FeatureType.NUMBER and isinstance(value, str):
            values[name] = Decimal(value)
        else:
            values[name] = value
    errors = {k: v for k, v in dict(data.get("errors", {})).items() if k in FEATURE_TYPES}
    return Features(values, errors=errors, explanations=dict(data.get("explanations", {})))


def _context(ctx: ContextIn) -> Context:
    return Context(ip=ctx.ip, device_id=ctx.device_id, user_agent=ctx.user_agent, country=ctx.country,
                   lat=ctx.lat, lon=ctx.lon, asn=ctx.asn)


class RiskService:
    """The login check and event ingestion."""

    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        audit: AuditLog,
        outbox: Outbox,
        ruleset: RuleSet,
        locks: LockService,
        accounts: AccountService,
        second_factor: SecondFactorVerifier,
        owed_client: uuid.UUID | None = None,
    ) -> None:
        """``owed_client``: an API client whose revocation this request has not checked yet; the account's
        row lock checks it in the same statement (then :attr:`client_checked` is true; a revoked client
        raises :class:`ClientRevoked`). Without an account row nothing is checked: the caller does it."""
        self._session = session
        self._owed_client = owed_client
        self.client_checked = False
        self._clock = clock
        self._audit = audit
        self._outbox = outbox
        self._ruleset = ruleset
        self._locks = locks
        self._accounts = accounts
        self._second_factor = second_factor
        self._store = FeatureStore(session, brute_force=ruleset.brute_force)

    # --- the login check ----------------------------------------------------------------------

    def stored_password(self, body: LoginCheckIn) -> StoredPassword:
        """The read-only first step of a login check: the IP throttle, then the account's password hash.

        Raises :class:`IpThrottled` (nothing stored, no password work) when the IP is over its failure
        limit. With the answer, :meth:`verify_password` can do the slow password work outside any
        transaction, and :meth:`check_login` uses its result.
        """
        now = self._clock.now()
        self._check_ip_throttle(_context(body.context), now)  # kept for check_login's features
        found = PASSWORD_HASH.execute(self._session, {"id": body.account_id})
        stored = found[0].password_hash if found else None
        return StoredPassword(body.account_id, stored, now)

    def verify_password(self, stored: StoredPassword, password: str) -> PasswordCheck:
        """argon2 against :meth:`stored_password`'s hash (no hash: the same work, and a failure). Uses no
        database."""
        return PasswordCheck(stored, self._accounts.check_password_hash(stored.password_hash, password))

    def check_login(self, body: LoginCheckIn, *, client_id: uuid.UUID | None,
                    checked: PasswordCheck | None = None) -> Outcome:
        """Verify the password (and second factor) and score the attempt.

        Raises :class:`IpThrottled` (nothing stored) when the IP is over its failure limit; the
        victim account is never locked for that. A locked account is denied after the same password
        work whether or not the password was right.

        ``checked``: the password was verified already (:meth:`verify_password`), against the hash the
        account still has; else (none given, or the password changed since) it is verified here. With it,
        the check began (and the IP throttle was checked) when :meth:`stored_password` ran.
        """
        now = checked.stored.at if checked is not None else self._clock.now()
        occurred = self._occurred(body.context.occurred_at, now)
        ctx = _context(body.context)
        if checked is None:
            self._check_ip_throttle(ctx, now)
        account = self._lock_account_row(body.account_id)
        self._expire_locks(account)
        if account is not None and account.status == AccountStatus.LOCKED:
            if checked is None:
                self._accounts.verify_password(None, body.password)  # same work as a real check
            return self._blocked_login(account, ctx, occurred, now, client_id, payload=body)
        current = account.password_hash if account is not None else None
        if (checked is not None and checked.stored.account_id == body.account_id
                and checked.stored.password_hash == current):
            password_ok = self._accounts.accept_verification(account, checked.result)
        else:
            password_ok = self._accounts.verify_password(account, body.password)
        second = SecondFactorOutcome.NOT_ENROLLED
        if password_ok and account is not None:
            second = self._second_factor.check(account, totp_code=body.totp_code,
                                               recovery_code=body.recovery_code, at=now)
        succeeded = password_ok and second is not SecondFactorOutcome.INVALID
        return self._login(account, body.account_id, ctx, occurred, now, client_id, payload=body,
                           succeeded=succeeded, second=second)

    def _expire_locks(self, account: Account | None) -> None:
        """End the account's overdue temporary locks and restrictions before deciding.

        Only a locked account has open locks, only a restricted one a restriction: an active account
        costs nothing here.
        """
        if account is not None and account.status in (AccountStatus.LOCKED, AccountStatus.RESTRICTED):
            self._locks.expire_due(account_id=account.id)

    def _check_ip_throttle(self, ctx: Context, now: datetime) -> None:
        if not ctx.ip:
            return
        config = self._ruleset.brute_force
        recent = [at for at, _ in self._store.ip_failures(ctx.ip, now, config.ip_window, keep=True)]
        verdict = ip_throttle(config, recent, now)
        if verdict.throttled:
            raise IpThrottled(retry_after=verdict.retry_after_seconds)

    def _lock_account_row(self, account_id: str) -> Account | None:
        # Row lock: logins of one account are serialised, so counters and locks stay consistent
        # under concurrency (SQLite serialises writers with BEGIN IMMEDIATE anyway).
        if self._owed_client is None:
            return self._session.execute(ACCOUNT_FOR_UPDATE, {"id": account_id},
                                         execution_options={"populate_existing": True}).scalar_one_or_none()
        row = self._session.execute(ACCOUNT_FOR_UPDATE_AND_CLIENT,
                                    {"id": account_id, "auth_client_id": self._owed_client},
                                    execution_options={"populate_existing": True}).one_or_none()
        return self._client_checked(row)[0] if row is not None else None

    def _lock_account_facts(self, account_id: str) -> LockedAccount | None:
        """:meth:`_lock_account_row` (the same row lock and client check) without the ORM object."""
        if self._owed_client is None:
            found = ACCOUNT_FACTS_FOR_UPDATE.execute(self._session, {"id": account_id})
            return LockedAccount(*found[0]) if found else None
        found = ACCOUNT_FACTS_FOR_UPDATE_AND_CLIENT.execute(
            self._session, {"id": account_id, "auth_client_id": self._owed_client})
        return LockedAccount(*self._client_checked(found[0])) if found else None

    def _client_checked(self, row: Sequence[Any]) -> Sequence[Any]:
        """``row`` without its last column, whether the request's API client is still active (the check
        its key owes); raises :class:`ClientRevoked` when it is not."""
        *columns, active = row
        if not active:
            raise ClientRevoked(REVOKED_MESSAGE)
        self._owed_client, self.client_checked = None, True
        return columns

    def _counter(self, account_id: str, *, lock: bool = True) -> FailureState | None:
        """The account id's failure counter (row-locked unless ``lock`` is false; None until its first
        failure)."""
        statement = COUNTER_STATE_FOR_UPDATE if lock else COUNTER_STATE
        found = statement.execute(self._session, {"account_id": account_id})
        if not found:
            return None
        row = found[0]
        return FailureState(
            failures=row.failures,
            window_started_at=utc(row.window_started_at) if row.window_started_at else None,
            temporary_locks=row.temporary_locks,
            last_lock_at=utc(row.last_lock_at) if row.last_lock_at else None,
        )

    def _save_state(self, account_id: str, stored: FailureState | None, state: FailureState) -> None:
        """Store ``state`` when it differs from the ``stored`` one (a clean success writes nothing). A
        counter's first row is a plain insert: two first failures of an id at once conflict (409), as
        before, instead of one overwriting the other's count."""
        if state == (stored or FailureState()):
            return
        values = {"failures": state.failures, "window_started_at": state.window_started_at,
                  "temporary_locks": state.temporary_locks, "last_lock_at": state.last_lock_at,
                  "updated_at": self._clock.now()}
        if stored is None:
            COUNTER_INSERT.execute(self._session, {"account_id": account_id, **values})
        else:
            COUNTER_UPDATE.execute(self._session, {"id": account_id, **values})

    def _blocked_login(self, account: Account, ctx: Context, occurred: datetime, now: datetime,
                       client_id: uuid.UUID | None, *, payload: BaseModel, event_id: str | None = None,
                       hash_: str | None = None) -> Outcome:
        state = self._counter(account.id, lock=False) or FailureState()
        features = self._store.login_features(account=account, account_id=account.id, ctx=ctx,
                                              occurred_at=occurred, received_at=now, counter=state,
                                              current_failed=False)
        assessment = evaluate(self._ruleset, EventKind.LOGIN, features)
        lock = next(iter(self._locks.open_locks(account.id)), None)
        reasons = [Reason(Rule.ACCOUNT_LOCKED, 0, "The account is locked"
                          + (f" (case {lock.reference})" if lock else "") + "."), *assessment.reasons]
        outcome = Outcome(Decision.DENY, assessment, account.status, reasons, lock)
        self._record(EventKind.LOGIN, account.id, ctx, occurred, now, client_id, payload, outcome, features,
                     login_outcome=LoginOutcome.BLOCKED, event_id=event_id, hash_=hash_)
        return outcome

    def _login(
        self, account: Account | None, account_id: str, ctx: Context, occurred: datetime, now: datetime,
        client_id: uuid.UUID | None, *, payload: BaseModel, succeeded: bool,
        second: SecondFactorOutcome, event_id: str | None = None, hash_: str | None = None,
        probe: Probe | None = None,
    ) -> Outcome:
        """``probe``: the login's :meth:`FeatureStore.login_probe`, read already."""
        # Unknown account ids get counters too, so their answers carry the same velocity reasons as a
        # real account's (nothing to lock, though).
        stored = self._counter(account_id)
        state = stored or FailureState()
        lock: Lock | None = None
        reasons: list[Reason] = []
        if not succeeded:
            result = register_failure(self._ruleset.brute_force, state, now)
            order = result.lock
            features_state = FailureState(result.failures_in_window, now, 0, None)
            features = self._store.login_features(
                account=account, account_id=account_id, ctx=ctx, occurred_at=occurred, received_at=now,
                counter=features_state, current_failed=True, probe=probe)
            self._save_state(account_id, stored, result.state)
            assessment = evaluate(self._ruleset, EventKind.LOGIN, features)
            reasons.append(Reason(Rule.INVALID_CREDENTIALS, 0, "The credentials are not valid."))
            assessment_id = uuid.uuid4()
            if order is not None and account is not None:
                config = self._ruleset.brute_force
                duration = ("until an appeal succeeds" if order.duration is None
                            else f"for {int(order.duration.total_seconds())} s")
                detail = (f"{config.max_failures} failed logins within {config.failure_window_seconds // 60} min; "
                          f"locked {duration}")
                lock = self._locks.place(
                    account, kind=LockKind.BRUTE_FORCE,
                    reasons=[{"rule": Rule.BRUTE_FORCE_LOCK, "points": 0, "detail": detail}],
                    actor=SYSTEM_ACTOR, expires_at=order.expires_at(now),
                    required_actions=[RequiredAction.RESET_PASSWORD] if order.indefinite else [],
                    assessment_id=assessment_id,
                )
                reasons.append(Reason(Rule.BRUTE_FORCE_LOCK, 0, detail))
            outcome = Outcome(Decision.DENY, assessment, account.status if account else AccountStatus.ACTIVE,
                              [*reasons, *assessment.reasons], lock, assessment_id=assessment_id)
            self._record(EventKind.LOGIN, account_id, ctx, occurred, now, client_id, payload, outcome,
                         features, login_outcome=LoginOutcome.FAILURE, event_id=event_id, hash_=hash_)
            return outcome

        assert account is not None  # noqa: S101 - a login only succeeds for an existing account
        features = self._store.login_features(account=account, account_id=account_id, ctx=ctx,
                                              occurred_at=occurred, received_at=now, counter=state,
                                              current_failed=False, probe=probe)
        assessment = evaluate(self._ruleset, EventKind.LOGIN, features)
        decision = assessment.decision
        if second is SecondFactorOutcome.MISSING and decision is not Decision.DENY:
            decision = Decision.MFA_REQUIRED
            reasons.append(Reason(Rule.SECOND_FACTOR_REQUIRED, 0, "Two-factor authentication is enrolled; "
                                  "send totp_code or recovery_code."))
        elif second is SecondFactorOutcome.VERIFIED and decision is Decision.MFA_REQUIRED:
            decision = Decision.ALLOW
            reasons.append(Reason(Rule.SECOND_FACTOR_VERIFIED, 0, "The second factor was verified."))
        outcome = Outcome(decision, assessment, account.status, [*reasons, *assessment.reasons])
        self._apply_actions(account, assessment, outcome)
        if outcome.decision is Decision.ALLOW:
            self._save_state(account_id, stored, register_success(state))
            self._after_successful_login(account, ctx, occurred, features)
        self._record(EventKind.LOGIN, account_id, ctx, occurred, now, client_id, payload, outcome, features,
                     login_outcome=LoginOutcome.SUCCESS, event_id=event_id, hash_=hash_)
        return outcome

    def _after_successful_login(self, account: Account, ctx: Context, occurred: datetime,
                                features: Features) -> None:
        if features.values.get("is_new_device") is True and (features.values.get("successful_login_count") or 0):
            self._outbox.webhook(WebhookEvent.LOGIN_NEW_DEVICE, {
                "account_id": account.id, "device_id": ctx.device_id, "ip": ctx.ip, "country": ctx.country,
                "user_agent": ctx.user_agent, "occurred_at": occurred.isoformat(),
            }, ordering_key=account.id)
            self._outbox.notify(email=account.email, phone=account.phone, template=NEW_DEVICE_TEMPLATE, context={
                "occurred_at": occurred.strftime("%Y-%m-%d %H:%M UTC"),
                "device": _device_description(ctx),
                "location": ctx.country or "unknown",
            }, ordering_key=account.id)
        self._store.record_successful_login(account.id, ctx)

    # --- events -------------------------------------------------------------------------------

    def ingest(self, kind: EventKind, body: LoginEventIn | TransactionEventIn | AccountChangeEventIn, *,
               client_id: uuid.UUID | None) -> tuple[dict[str, Any], bool]:
        """Record one event idempotently; return (answer, replayed).

        Same ``event_id`` and same body: the stored answer. Same ``event_id``, different body: 409.
        """
        hash_ = request_hash(body)
        # The account's row lock comes first: it serialises the account's events, so two requests with
        # the same event_id at once (same body, so same account) run one after the other and the second
        # finds the first's row and replays its answer. A different body under a used event_id is a 409
        # either way (here, or from the unique key when its account differs).
        account: Account | LockedAccount | None = (
            self._lock_account_facts(body.account_id) if isinstance(body, TransactionEventIn)
            else self._lock_account_row(body.account_id))
        now = self._clock.now()
        # The feature probe of a transaction, and of a login event of an active account, also reads what
        # an earlier event with this event_id stored (one round trip less than a lookup of its own; the
        # lock above is taken first all the same), before anything is written. Every other event, and one
        # that will not get that far, looks it up here.
        in_probe = account is not None and not self._in_future(body.occurred_at, now) and (
            isinstance(body, TransactionEventIn)
            or (isinstance(body, LoginEventIn) and account.status == AccountStatus.ACTIVE))
        if not in_probe:
            existing = self._session.execute(STORED_ANSWER, {"client_id": client_id,
                                                             "event_id": body.event_id}).first()
            if existing is not None:
                return self._replay(kind, body.event_id, hash_, existing.request_hash, existing.kind,
                                    existing.response), True
        if account is None:
            raise AccountNotFound(f"No account {body.account_id!r}.")
        occurred = self._occurred(body.occurred_at, now)
        done: Outcome | dict[str, Any]
        if isinstance(account, LockedAccount):
            assert isinstance(body, TransactionEventIn)  # noqa: S101 - locked as columns above
            done = self._transaction(account, body, occurred, now, client_id, hash_)
        elif isinstance(body, LoginEventIn):
            done = self._login_event(account, body, occurred, now, client_id, hash_, replay_in_probe=in_probe)
        else:
            assert isinstance(body, AccountChangeEventIn)  # noqa: S101 - a transaction's account is columns
            done = self._change(account, body, occurred, now, client_id, hash_)
        if not isinstance(done, Outcome):
            return done, True
        return {"event_id": body.event_id, **done.as_answer()}, False

    @staticmethod
    def _replay(kind: EventKind, event_id: str, hash_: str, stored_hash: str | None, stored_kind: str | None,
                response: Mapping[str, Any] | None) -> dict[str, Any]:
        """The stored answer of an earlier event with this ``event_id``; 409 when its body differed."""
        if stored_hash != hash_ or stored_kind != kind or response is None:
            raise IdempotencyConflict(f"event_id {event_id!r} was already used with a different body.",
                                      event_id=event_id)
        return dict(response)

    def _login_event(self, account: Account, body: LoginEventIn, occurred: datetime, now: datetime,
                     client_id: uuid.UUID | None, hash_: str, *, replay_in_probe: bool) -> Outcome | dict[str, Any]:
        """Score and store a login event. ``replay_in_probe`` (an active account): the feature probe also
        looks for an earlier event with this ``event_id``; its stored answer is returned (nothing written),
        or :class:`IdempotencyConflict` raised."""
        ctx = _context(body.context)
        probe = None
        if replay_in_probe:
            probe = self._store.login_probe(account_id=account.id, ctx=ctx, occurred_at=occurred, received_at=now,
                                            stored=(client_id, body.event_id))
            stored = stored_answer(probe)
            if stored is not None:
                return self._replay(EventKind.LOGIN, body.event_id, hash_, *stored)
        self._expire_locks(account)
        if account.status == AccountStatus.LOCKED:
            return self._blocked_login(account, ctx, occurred, now, client_id, payload=body,
                                       event_id=body.event_id, hash_=hash_)
        return self._login(account, account.id, ctx, occurred, now, client_id, payload=body,
                           succeeded=body.outcome == "success", second=SecondFactorOutcome.NOT_ENROLLED,
                           event_id=body.event_id, hash_=hash_, probe=probe)

    def _transaction(self, facts: LockedAccount, body: TransactionEventIn, occurred: datetime, now: datetime,
                     client_id: uuid.UUID | None, hash_: str) -> Outcome | dict[str, Any]:
        """Score and store a transaction; or, when an earlier event used its ``event_id``, return that
        event's stored answer (nothing written) or raise :class:`IdempotencyConflict`."""
        ctx = _context(body.context)
        tx = TransactionInput(
            amount=Decimal(body.amount), currency=body.currency, destination_address=body.destination.address,
            destination_country=body.destination.country,
            balance_before=Decimal(body.balance_before) if body.balance_before is not None else None,
        )
        # The probe reads events, the deny list and MFA audit entries, none of which expiring locks
        # changes: it runs first, so a replay is found before anything is written.
        probe = self._store.transaction_probe(account_id=facts.id, tx=tx, ctx=ctx, occurred_at=occurred,
                                              received_at=now, client_id=client_id, event_id=body.event_id)
        stored = stored_answer(probe)
        if stored is not None:
            return self._replay(EventKind.TRANSACTION, body.event_id, hash_, *stored)
        # The ORM object only when the account's state may change or matters (see LockedAccount).
        account = self._locked_account(facts) if facts.status != AccountStatus.ACTIVE else None
        self._expire_locks(account)
        features = self._store.transaction_features(account=facts, tx=tx, ctx=ctx, occurred_at=occurred,
                                                    received_at=now, probe=probe)
        assessment = evaluate(self._ruleset, EventKind.TRANSACTION, features)
        if account is None and not assessment.actions:
            # What _event_outcome makes of an active account when the rules ask for no action.
            outcome = Outcome(assessment.decision, assessment, facts.status, list(assessment.reasons))
        else:
            outcome = self._event_outcome(account or self._locked_account(facts), assessment,
                                          hold_when_restricted=True)
        if outcome.decision is Decision.BLOCK:
            self._audit.record(AuditTag.TRANSACTION_BLOCKED, actor=SYSTEM_ACTOR, subject_type="account",
                               subject_id=facts.id,
                               data={"event_id": body.event_id, "score": assessment.score,
                                     "rules": [r.rule for r in outcome.reasons]})
            self._outbox.webhook(WebhookEvent.TRANSACTION_BLOCKED, {
                "account_id": facts.id, "event_id": body.event_id, "amount": body.amount,
                "currency": body.currency, "destination": body.destination.model_dump(mode="json"),
                "risk": {"score": assessment.score, "band": assessment.band},
                "reasons": [{"rule": r.rule, "detail": r.detail} for r in outcome.reasons],
            }, ordering_key=facts.id)
        self._record(EventKind.TRANSACTION, facts.id, ctx, occurred, now, client_id, body, outcome, features,
                     event_id=body.event_id, hash_=hash_, tx=tx)
        return outcome

    def _locked_account(self, facts: LockedAccount) -> Account:
        """The ORM object of an account whose row this transaction locked already (no lock statement)."""
        account = self._session.get(Account, facts.id, populate_existing=True)
        assert account is not None  # noqa: S101 - the row is locked: it cannot have gone
        return account

    def _change(self, account: Account, body: AccountChangeEventIn, occurred: datetime, now: datetime,
                client_id: uuid.UUID | None, hash_: str) -> Outcome:
        self._expire_locks(account)
        ctx = _context(body.context)
        features = self._store.change_features(account=account, change=body.change, ctx=ctx,
                                               occurred_at=occurred, received_at=now)
        assessment = evaluate(self._ruleset, EventKind.ACCOUNT_CHANGE, features)
        outcome = self._event_outcome(account, assessment, hold_when_restricted=False)
        self._record(EventKind.ACCOUNT_CHANGE, account.id, ctx, occurred, now, client_id, body, outcome,
                     features, event_id=body.event_id, hash_=hash_, change=body.change)
        return outcome

    def _event_outcome(self, account: Account, assessment: Assessment, *, hold_when_restricted: bool) -> Outcome:
        outcome = Outcome(assessment.decision, assessment, account.status, list(assessment.reasons))
        if account.status == AccountStatus.LOCKED:
            lock = next(iter(self._locks.open_locks(account.id)), None)
            outcome.decision = Decision.BLOCK
            outcome.lock = lock
            outcome.reasons.insert(0, Reason(Rule.ACCOUNT_LOCKED, 0, "The account is locked"
                                             + (f" (case {lock.reference})" if lock else "") + "."))
            return outcome
        self._apply_actions(account, assessment, outcome)
        if (hold_when_restricted and account.status == AccountStatus.RESTRICTED
                and outcome.decision is Decision.ALLOW):
            outcome.decision = Decision.REVIEW
            outcome.reasons.insert(0, Reason(Rule.ACCOUNT_RESTRICTED, 0,
                                             "The account is restricted: outgoing transactions are held."))
        outcome.account_status = account.status
        return outcome

    # --- actions and the guard ----------------------------------------------------------------

    def _apply_actions(self, account: Account, assessment: Assessment, outcome: Outcome) -> None:
        reasons = [{"rule": r.rule, "points": r.points, "detail": r.detail} for r in assessment.reasons]
        for action in assessment.actions:
            if action.action is ActionType.LOCK:
                if account.status == AccountStatus.LOCKED:
                    continue
                if not self._guard_allows_lock(assessment):
                    softer = Decision.REVIEW if assessment.kind is not EventKind.LOGIN else Decision.DENY
                    outcome.decision = softer
                    outcome.reasons.insert(0, Reason(
                        Rule.GUARD, 0, "Automatic lock withheld: the cap on automatic locks per window was "
                        "reached; sent to review instead."))
                    continue
                outcome.lock = self._locks.place(
                    account, kind=LockKind.RISK, reasons=reasons, actor=SYSTEM_ACTOR,
                    required_actions=[RequiredAction.RESET_PASSWORD], assessment_id=outcome.assessment_id,
                    note=f"{assessment.kind} scored {assessment.score} ({assessment.band})",
                )
            elif action.action is ActionType.RESTRICT:
                self._locks.restrict(account, reasons=reasons, actor=SYSTEM_ACTOR)
        outcome.account_status = account.status

    def _guard_allows_lock(self, assessment: Assessment) -> bool:
        """Return whether another automatic lock fits under the cap; raise an alert when it does not."""
        config = self._ruleset.guard
        now = self._clock.now()
        window = timedelta(seconds=config.window_seconds)
        if not is_sqlite(self._session):
            # Serialise count-then-lock across workers until this transaction ends, so the cap holds
            # exactly (SQLite already serialises writers). Only requests about to lock get here.
            self._session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GUARD_LOCK_KEY})
        recent = self._locks.count_created(LockKind.RISK, now - window)
        active = self._session.scalar(
            select(func.count()).select_from(Account).where(Account.status != AccountStatus.LOCKED)
        ) or 0
        cap = max(config.min_locks, math.floor(config.max_fraction_of_active * active))
        if recent < cap:
            return True
        self._raise_alert("auto_lock_guard", now, window, {
            "locks_in_window": recent, "cap": cap, "active_accounts": active,
            "window_seconds": config.window_seconds, "ruleset_version": assessment.ruleset_version,
        })
        return False

    def _raise_alert(self, kind: str, now: datetime, window: timedelta, data: dict[str, Any]) -> None:
        epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
        window_start = epoch + window * ((now - epoch) // window)
        exists = self._session.scalar(
            select(RiskAlert.id).where(RiskAlert.kind == kind, RiskAlert.window_start == window_start))
        if exists is not None:
            return
        try:
            with self._session.begin_nested():
                self._session.add(RiskAlert(kind=kind, window_start=window_start, created_at=now, data=data))
        except IntegrityError:
            return  # a concurrent request raised it first
        self._audit.record(AuditTag.GUARD_TRIPPED, actor=SYSTEM_ACTOR, subject_type="risk",
                           subject_id=kind, data=data)
        self._outbox.webhook(WebhookEvent.OPERATOR_ALERT, {"alert": kind, "raised_at": now.isoformat(),
                                                           **data})

    # --- storage ------------------------------------------------------------------------------

    @staticmethod
    def _in_future(occurred: datetime | None, now: datetime) -> bool:
        """Whether ``occurred`` lies beyond the clock-skew allowance (:meth:`_occurred` refuses it)."""
        return occurred is not None and utc(occurred) > now + MAX_FUTURE_SKEW

    def _occurred(self, occurred: datetime | None, now: datetime) -> datetime:
        if occurred is None:
            return now
        occurred = utc(occurred)
        if self._in_future(occurred, now):
            raise EventInFuture("occurred_at is more than 5 minutes in the future.",
                                errors=[{"field": "occurred_at", "message": "in the future"}])
        return occurred

    def _record(
        self, kind: EventKind, account_id: str, ctx: Context, occurred: datetime, now: datetime,
        client_id: uuid.UUID | None, payload: BaseModel, outcome: Outcome, features: Features, *,
        login_outcome: LoginOutcome | None = None, event_id: str | None = None, hash_: str | None = None,
        tx: TransactionInput | None = None, change: str | None = None,
    ) -> None:
        # Core inserts into the tables: ingestion is the hot path, and neither the ORM's unit of work nor
        # its bulk-insert layer adds anything for rows that are never changed afterwards. PostgreSQL takes
        # both in one statement; SQLite gets one per table.
        # Time-ordered ids (UUIDv7): the event's and the assessment's primary keys and the assessment's
        # event_pk are indexed, and random ids would land each event on random index pages, each written
        # whole into the WAL after every checkpoint.
        event_pk = uuid7()
        self._session.flush()  # pending ORM changes (counters, locks) first, in their own order
        event = {
            "id": event_pk, "client_id": client_id, "event_id": event_id, "kind": kind,
            "account_id": account_id, "occurred_at": occurred, "received_at": now, "request_hash": hash_,
            "response": {"event_id": event_id, **outcome.as_answer()} if event_id is not None else None,
            "outcome": str(login_outcome) if login_outcome else str(outcome.decision),
            "ip": ctx.ip, "country": ctx.country, "device_id": ctx.device_id, "lat": ctx.lat, "lon": ctx.lon,
            "amount": format(tx.amount, "f") if tx else None, "currency": tx.currency if tx else None,
            "destination_address": tx.destination_address if tx else None,
            "destination_country": tx.destination_country if tx else None, "change": change,
            "payload": payload.model_dump(mode="json", exclude=set(SECRET_FIELDS)),
        }
        assessment = {
            "id": outcome.assessment_id, "event_pk": event_pk, "account_id": account_id, "kind": kind,
            "score": outcome.assessment.score, "band": outcome.assessment.band,
            "decision": outcome.assessment.decision, "final_decision": outcome.decision,
            "ruleset_version": outcome.assessment.ruleset_version, "features": features_to_json(features),
            "rules": [{"rule_id": r.rule_id, "outcome": str(r.outcome), "mode": str(r.mode), "points": r.points,
                       "detail": r.detail} for r in outcome.assessment.results],
            "occurred_at": occurred, "created_at": now,
        }
        if not is_sqlite(self._session):
            # One statement, one round trip: both inserts, the event's as a data-modifying CTE (the
            # assessment's foreign key is checked at the end of the statement).
            params = {**{f"e_{k}": v for k, v in event.items()}, **{f"a_{k}": v for k, v in assessment.items()}}
            _record_statement().execute(self._session, params)
            return
        EVENT_INSERT.execute(self._session, event)
        ASSESSMENT_INSERT.execute(self._session, assessment)


@functools.cache
def _record_statement() -> DriverStatement:
    """PostgreSQL: the event and its assessment in one statement (built once).

    Parameters: ``e_<column>`` for the event, ``a_<column>`` for the assessment.
    """
    def values(table: Table, prefix: str) -> dict[str, Any]:
        return {c.name: bindparam(f"{prefix}{c.name}", type_=c.type) for c in table.columns}

    events, assessments = table_of(RiskEvent), table_of(AssessmentRow)
    event = insert(events).values(values(events, "e_")).cte("ev")
    return DriverStatement(insert(assessments).values(values(assessments, "a_")).add_cte(event))


def replay_decisions(
    assessments: Sequence[AssessmentRow], candidate: RuleSet
) -> list[tuple[AssessmentRow, Assessment]]:
    """Re-evaluate stored assessments with ``candidate`` (their stored features); return the changed ones."""
    changed: list[tuple[AssessmentRow, Assessment]] = []
    for row in assessments:
        result = evaluate(candidate, EventKind(row.kind), features_from_json(row.features))
        if result.decision != row.decision:
            changed.append((row, result))
    return changed


def _device_description(ctx: Context) -> str:
    """What the owner is told about a new device: browser and OS (e.g. "Chrome 120 on Windows 10")."""
    agent = parse_user_agent(ctx.user_agent)
    if agent.browser != UNKNOWN or agent.os != UNKNOWN:
        return f"{agent.browser} on {agent.os}"
    return ctx.device_id or "an unknown device"
