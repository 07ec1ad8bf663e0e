"""Hypothesis stateful test of the appeal lifecycle, through the HTTP API (both backends).

Random interleavings of: locks of every kind (the risk engine's and brute force's through ``LockService``,
an operator's through ``/v1/review``, the owner's "not me" through ``/v1/freeze``), appeals (for locked,
unlocked and unknown identifiers: decoys), verifications (contact codes right and wrong, resent codes,
TOTP, recovery codes, recent transactions, identity documents), operators' decisions (approve, reject,
four-eyes with three reviewers, stale versions), withdrawals, required actions (password reset and TOTP
enrolment with the appeal token, or a password reset by e-mail token), manual unlocks, time passing (codes,
proofs, appeals and temporary locks expire) and the housekeeping sweeps (``locks expire``, ``appeals
expire``).

Each step predicts the answer where the rules make it certain (a right, fresh code is accepted; a second
approval by the same operator is refused; an action that is not pending is 409; ...) and never accepts a
5xx. After every step:

* account status and locks agree: ``locked`` exactly when an open lock exists (a released account has no
  open lock); a ``released`` appeal's lock is released; decoys never get past ``submitted``;
* every appeal and lock history row is a transition of its table (``security.appeals.states``,
  ``security.locks.states``), by an actor kind the table allows, and each history replays to the stored
  state;
* an appeal approved by review has as many distinct approving operators as its kind asks (four-eyes);
* the audit chain verifies;
* the step wrote exactly one audit entry per state change (appeal and lock), and the right webhooks:
  ``account.locked`` per lock placed, ``account.unlocked`` per account that went from locked to active,
  ``appeal.decided`` per decision, each payload as documented; a refused request changed no state except
  what time had already decided (an expiry, a lock released elsewhere) on behalf of the system.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from security import create_app
from security.accounts.models import Account
from security.appeals.models import Appeal, AppealHistory, AppealReview, AppealVerification, ContactCode
from security.appeals.policy import VerificationMethod, progress
from security.appeals.services import AuditTag as AppealTag
from security.appeals.states import (
    OPEN_STATES,
    TRANSITIONS,
    VERIFIABLE_STATES,
    ActorKind,
    AppealEvent,
    AppealState,
)
from security.appeals.views import POLICY_KEY
from security.audit.models import AuditEntry
from security.audit.services import AuditLog, chain_head, verify_audit_log
from security.credentials import totp
from security.crypto import SecretBox
from security.delivery.events import schema_problems
from security.delivery.outbox import Outbox, OutboxMessage
from security.entropy import SystemEntropy
from security.locks.models import Lock, LockHistory
from security.locks.services import AuditTag as LockTag
from security.locks.services import LockService
from security.locks.states import LOCK_TRANSITIONS, AccountStatus, LockEvent, LockKind, LockStatus
from security.permissions import ALL_SCOPES
from security.risk.models import RiskEvent
from security.runtime import runtime
from tests.conftest import ApiClient, issue_key, joined_session
from tests.credentials.conftest import make_settings
from tests.operators.factories import TestOperator, make_operator

ACCOUNTS = 3  # account 0 has TOTP enabled; the index ACCOUNTS names nobody (decoy appeals)
PASSWORD = "violet-harbour-engine-42"
DOCUMENT = "C01X00T47"
TRANSACTIONS = (("120.50", 1), ("75.00", 3), ("1999.99", 6))  # (amount, days before the start)
NORMAL = {"max_examples": 40, "stateful_step_count": 30}
# --long: 100 runs of 50 steps (about 8 minutes on SQLite; every step re-verifies the whole audit chain,
# so 250 runs did not finish within 36 minutes).
LONG = {"max_examples": 100, "stateful_step_count": 50}
NO_LIMITS = "100000 per hour"
LIMITS = {
    "appeal_limits": {key: NO_LIMITS for key in (
        "appeals_per_identifier", "appeals_per_ip", "verifications_per_ip", "messages_per_ip",
        "freeze_codes_per_identifier", "freeze_codes_per_ip", "freezes_per_identifier", "freezes_per_ip")},
    "credentials": {"reset_requests_per_identifier": NO_LIMITS, "reset_requests_per_ip": NO_LIMITS,
                    "reset_confirms_per_ip": NO_LIMITS},
    # The operators sign in again every 50 (frozen) minutes; the per-IP sign-in limit counts real time and
    # is proven in tests/operators/test_sign_in_rate_limit.py.
    "operators": {"sign_ins_per_ip": NO_LIMITS},
}
OPERATOR_TOKEN_REUSE = timedelta(minutes=50)  # tokens live 60 minutes; sign in again before that
DECISIONS = frozenset({AppealEvent.APPROVE, AppealEvent.REJECT, AppealEvent.AUTO_APPROVE})
# What time decides on its own; a refused request may still record it (the refusal is then about it).
SYSTEM_ONLY = frozenset({AppealEvent.EXPIRE, AppealEvent.LOCK_RELEASED})
SERVER_ERROR = 500
UUID_IN_PATH = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|ap-[0-9a-f]{10}-[0-9]")


def actor_kind(actor: str) -> ActorKind:
    if actor.startswith("operator:"):
        return ActorKind.OPERATOR
    return ActorKind.SYSTEM if actor == "system" else ActorKind(actor)


@dataclass
class World:
    """What outlives one example: the app, the operators, the test connection's session."""

    app: Any
    session: Any
    clock: Any
    box: SecretBox
    api: ApiClient
    operators: list[TestOperator]
    tokens: dict[str, tuple[str, Any]] = field(default_factory=dict)


@dataclass
class Owner:
    account_id: str
    email: str
    phone: str
    password: str = PASSWORD
    totp_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    transactions: list[tuple[str, Any]] = field(default_factory=list)  # (amount, occurred_at)


@dataclass
class AppealRef:
    appeal_id: str
    token: str
    owner: int | None  # index of the account, None for an unknown identifier
    code: str | None  # the newest contact code sent for it (None: a decoy's code is never sent)


@dataclass
class Delta:
    """What one step wrote (rows newer than the step's start)."""

    history: list[AppealHistory]
    lock_history: list[LockHistory]
    audit: list[AuditEntry]
    messages: list[OutboxMessage]
    status_before: dict[str, str]
    status_after: dict[str, str]

    def webhooks(self, event_type: str) -> list[OutboxMessage]:
        return [m for m in self.messages if m.channel == "webhook" and m.event_type == event_type]


#: What the runs reached: (request, status) and the appeal transitions seen, printed at the end of a run.
TALLY: Counter[str] = Counter()


class AppealLifecycle(RuleBasedStateMachine):
    appeals = Bundle("appeals")

    def __init__(self, world: World) -> None:
        super().__init__()
        self.w = world
        self.session = world.session
        self.clock = world.clock
        self.policy = runtime(world.app).extras[POLICY_KEY]
        tag = uuid.uuid4().hex[:10]
        self.owners = [Owner(f"ap-{tag}-{n}", f"ap-{tag}-{n}@example.com", f"+4917{int(tag[:8], 16) % 10**8:08d}{n}")
                       for n in range(ACCOUNTS)]
        self.unknown = f"nobody-{tag}@example.com"
        self.appeal_ids: list[str] = []
        self.refs: list[AppealRef] = []
        self.passwords = (f"copper-lantern-meadow-{n}-{tag[:4]}" for n in itertools.count())
        # The audit chain as verified so far (every example shares the world's database, so the chain
        # grows over the whole run; each step checks its own entries, each example's end all of them).
        self.audit_verified = chain_head(self.session)

    # --- plumbing -----------------------------------------------------------------------------------

    @property
    def account_ids(self) -> list[str]:
        return [o.account_id for o in self.owners]

    def client(self) -> Any:
        return self.w.app.test_client()

    def locks(self, account_id: str) -> LockService:
        entropy = SystemEntropy()
        audit = AuditLog(self.session, clock=self.clock)
        return LockService(self.session, clock=self.clock, entropy=entropy, audit=audit,
                           outbox=Outbox(self.session, clock=self.clock, entropy=entropy, secret_box=self.w.box))

    def open_locks(self, account_id: str) -> list[Lock]:
        self.session.expire_all()
        return self.locks(account_id).open_locks(account_id)

    def appeal(self, ref: AppealRef) -> Appeal:
        self.session.expire_all()
        appeal = self.session.get(Appeal, uuid.UUID(ref.appeal_id))
        assert appeal is not None
        return appeal

    def operator_headers(self, op: TestOperator) -> dict[str, str]:
        token, issued = self.w.tokens.get(op.name, (None, None))
        if token is None or self.clock.now() - issued >= OPERATOR_TOKEN_REUSE:
            self.clock.advance(seconds=totp.PERIOD_SECONDS)  # a TOTP step this operator has not used
            response = self.client().post("/v1/review/tokens", json={
                "name": op.name, "password": op.password, "totp_code": op.code(self.clock.now())})
            assert response.status_code == 201, response.get_json()
            token = response.get_json()["token"]
            self.w.tokens[op.name] = (token, self.clock.now())
        return {"Authorization": f"Bearer {token}"}

    def _marks(self) -> tuple[int, int, int, int, dict[str, str]]:
        self.session.expire_all()
        return (
            self.session.scalar(select(func.coalesce(func.max(AppealHistory.id), 0))),
            self.session.scalar(select(func.coalesce(func.max(LockHistory.id), 0))),
            self.session.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))),
            self.session.scalar(select(func.coalesce(func.max(OutboxMessage.id), 0))),
            self.statuses(),
        )

    def statuses(self) -> dict[str, str]:
        query = select(Account.id, Account.status).where(Account.id.in_(self.account_ids))
        return dict(self.session.execute(query).all())

    def step(self, action: Any) -> tuple[Any, Delta]:
        """Run ``action`` (HTTP requests or a service call) and check what it wrote."""
        history, lock_history, seq, message, before = self._marks()
        result = action()
        self.session.expire_all()
        delta = Delta(
            history=list(self.session.scalars(select(AppealHistory).where(AppealHistory.id > history)
                                              .order_by(AppealHistory.id))),
            lock_history=list(self.session.scalars(select(LockHistory).where(LockHistory.id > lock_history)
                                                   .order_by(LockHistory.id))),
            audit=list(self.session.scalars(select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq))),
            messages=list(self.session.scalars(select(OutboxMessage).where(OutboxMessage.id > message)
                                               .order_by(OutboxMessage.id))),
            status_before=before, status_after=self.statuses(),
        )
        status = getattr(result, "status_code", None)
        assert status is None or status < SERVER_ERROR, result.get_data(as_text=True)
        if status is not None:
            TALLY[f"{result.request.method} {UUID_IN_PATH.sub('{id}', result.request.path)} -> {status}"] += 1
        TALLY.update(f"{r.from_state} -{r.event}-> {r.to_state}" for r in delta.history)
        self.check_delta(delta, refused=status is not None and status >= 400)
        return result, delta

    def check_delta(self, delta: Delta, *, refused: bool) -> None:
        # Appeal transitions: in the table, by an allowed actor, one audit entry each.
        for row in delta.history:
            transition = TRANSITIONS.get((AppealState(row.from_state), AppealEvent(row.event)))
            assert transition is not None, f"appeal {row.appeal_id}: {row.event} from {row.from_state}"
            assert transition.to == row.to_state, f"appeal {row.appeal_id}: {row.event} -> {row.to_state}"
            assert actor_kind(row.actor) in transition.actors, f"{row.actor} may not {row.event}"
            if refused:
                assert row.event in SYSTEM_ONLY, f"a refused request changed appeal {row.appeal_id}: {row.event}"
        transitions = Counter((row.appeal_id.hex, row.event, row.from_state, row.to_state) for row in delta.history)
        audited = Counter((uuid.UUID(e.subject_id).hex, e.data["event"], e.data["from"], e.data["to"])
                          for e in delta.audit if e.action == AppealTag.APPEAL_TRANSITION)
        assert transitions == audited, f"appeal transitions {transitions} vs their audit entries {audited}"
        # Lock transitions: in the table, one audit entry each.
        for row in delta.lock_history:
            if row.from_status is None:
                assert (row.event, row.to_status) == ("place", LockStatus.ACTIVE)
            else:
                target, _ = LOCK_TRANSITIONS[(LockStatus(row.from_status), LockEvent(row.event))]
                assert row.to_status == target, f"lock {row.lock_id}: {row.event} -> {row.to_status}"
        if refused:
            assert all(row.actor == "system" and row.event == LockEvent.EXPIRE for row in delta.lock_history), (
                "a refused request changed a lock")
        lock_changes = Counter((row.lock_id.hex, row.event) for row in delta.lock_history)
        lock_audit = Counter(
            (uuid.UUID(e.data["lock_id"]).hex, e.data.get("event", "place")) for e in delta.audit
            if e.action in (LockTag.LOCK_PLACED, LockTag.LOCK_RELEASED, LockTag.LOCK_AWAITING_ACTIONS))
        assert lock_changes == lock_audit, f"lock changes {lock_changes} vs their audit entries {lock_audit}"
        # Webhooks: the state changes announced, each once, each as documented.
        placed = Counter(row.lock_id.hex for row in delta.lock_history if row.from_status is None)
        assert Counter(uuid.UUID(m.payload["data"]["lock_id"]).hex for m in delta.webhooks("account.locked")) == placed
        decided = Counter(row.appeal_id.hex for row in delta.history if row.event in DECISIONS)
        assert Counter(uuid.UUID(m.payload["data"]["appeal_id"]).hex
                       for m in delta.webhooks("appeal.decided")) == decided
        # (A sweep also releases earlier examples' temporary locks: only this example's accounts are compared.)
        unlocked = Counter(a for a, s in delta.status_after.items()
                           if s == AccountStatus.ACTIVE and delta.status_before.get(a) == AccountStatus.LOCKED)
        announced = Counter(m.payload["data"]["account_id"] for m in delta.webhooks("account.unlocked"))
        assert +Counter({a: announced[a] for a in self.account_ids}) == unlocked
        assert not delta.webhooks("account.restricted")
        for message in delta.messages:
            if message.channel == "webhook":
                assert schema_problems(message.event_type, message.payload["data"]) == [], message.payload

    def effective(self, appeal: Appeal) -> AppealState:
        """The state the appeal is in once time and other slices are applied (what ``refresh`` records)."""
        state = AppealState(appeal.state)
        if state in VERIFIABLE_STATES and self.clock.now() >= appeal.expires_at:
            return AppealState.EXPIRED
        if state in OPEN_STATES and appeal.lock_id is not None:
            lock = self.session.get(Lock, appeal.lock_id)
            if lock is not None and lock.status == LockStatus.RELEASED:
                return AppealState.RELEASED
        return state

    def verified(self, appeal: Appeal) -> dict[VerificationMethod, Any]:
        rows = self.session.scalars(select(AppealVerification).where(AppealVerification.appeal_id == appeal.id))
        return {VerificationMethod(r.method): r for r in rows}

    def useful(self, appeal: Appeal) -> frozenset[VerificationMethod]:
        if appeal.lock_kind is None:
            return frozenset({VerificationMethod.CONTACT_CODE})
        done = {m: r.verified_at for m, r in self.verified(appeal).items() if r.verified_at is not None}
        return progress(self.policy.for_kind(appeal.lock_kind), done, self.clock.now()).useful_methods

    def can_attempt(self, appeal: Appeal, method: VerificationMethod) -> bool:
        row = self.verified(appeal).get(method)
        return appeal.attempts < self.policy.max_attempts_per_appeal and (
            row is None or row.attempts < self.policy.max_attempts[method])

    def expect_state_after_success(self, ref: AppealRef) -> None:
        appeal = self.appeal(ref)
        kind = self.policy.for_kind(appeal.lock_kind)
        if self.useful(appeal):
            assert appeal.state == AppealState.VERIFYING
        elif kind.review:
            assert appeal.state == AppealState.PENDING_REVIEW
        else:
            assert appeal.state in (AppealState.APPROVED, AppealState.RELEASED)

    def newest_code(self, owner: Owner) -> str:
        message = self.session.scalars(
            select(OutboxMessage).where(OutboxMessage.event_type == "contact_code",
                                        OutboxMessage.destination.in_([owner.email, owner.phone]))
            .order_by(OutboxMessage.id.desc()).limit(1)).one()
        return str(json.loads(self.w.box.decrypt(message.sealed))["code"])

    def totp_code(self, owner: Owner) -> str | None:
        if owner.totp_secret is None:
            return None
        self.clock.advance(seconds=totp.PERIOD_SECONDS)  # a step not used yet (replays are refused)
        return totp.code_at(owner.totp_secret, self.clock.now())

    def owner_of(self, ref: AppealRef) -> Owner | None:
        return self.owners[ref.owner] if ref.owner is not None else None

    # --- set-up --------------------------------------------------------------------------------------

    @initialize()
    def create_accounts(self) -> None:
        for n, owner in enumerate(self.owners):
            profile = {"email": owner.email, "phone": owner.phone, "home_country": "DE", "identity_document": DOCUMENT}
            assert self.w.api.put(f"/v1/accounts/{owner.account_id}", json=profile).status_code == 201
            assert self.w.api.put(f"/v1/accounts/{owner.account_id}/password",
                                  json={"password": owner.password}).status_code == 204
            for amount, days in TRANSACTIONS:
                at = self.clock.now() - timedelta(days=days)
                owner.transactions.append((amount, at))
                self.session.add(RiskEvent(id=uuid.uuid4(), kind="transaction", account_id=owner.account_id,
                                           occurred_at=at, received_at=at, amount=amount, currency="EUR", payload={}))
            self.session.commit()
            if n == 0:
                started = self.w.api.post(f"/v1/accounts/{owner.account_id}/totp").get_json()
                confirmed = self.w.api.post(f"/v1/accounts/{owner.account_id}/totp/confirm",
                                            json={"code": totp.code_at(started["secret"], self.clock.now())})
                assert confirmed.status_code == 200, confirmed.get_json()
                owner.totp_secret = started["secret"]
                owner.recovery_codes = list(confirmed.get_json()["recovery_codes"])

    # --- locks ---------------------------------------------------------------------------------------

    @rule(n=st.integers(0, ACCOUNTS - 1), kind=st.sampled_from(LockKind))
    def lock(self, n: int, kind: LockKind) -> None:
        owner = self.owners[n]
        open_locks = self.open_locks(owner.account_id)
        if len(open_locks) >= 2:
            return
        if kind is LockKind.USER_REPORTED:
            frozen = any(lock.kind == LockKind.USER_REPORTED for lock in open_locks)
            response, delta = self.step(lambda: self.client().post(
                "/v1/freeze", json={"identifier": owner.email, "password": owner.password}))
            assert response.status_code == 200, response.get_json()
            assert len(delta.webhooks("account.locked")) == (0 if frozen else 1)
        elif kind is LockKind.OPERATOR:
            headers = self.operator_headers(self.w.operators[0])
            response, delta = self.step(lambda: self.client().post(
                f"/v1/review/accounts/{owner.account_id}/locks", json={"note": "held for review"}, headers=headers))
            assert response.status_code == 201, response.get_json()
        else:
            expires_at = self.clock.now() + timedelta(minutes=15) if kind is LockKind.BRUTE_FORCE else None

            def place() -> None:
                account = self.session.get(Account, owner.account_id)
                self.locks(owner.account_id).place(account, kind=kind, reasons=[{"rule": "stateful"}], actor="system",
                                                  expires_at=expires_at)
                self.session.commit()

            _, delta = self.step(place)
            assert len(delta.webhooks("account.locked")) == 1
        assert self.statuses()[owner.account_id] == AccountStatus.LOCKED

    @rule(n=st.integers(0, ACCOUNTS - 1))
    def operator_unlock(self, n: int) -> None:
        headers = self.operator_headers(self.w.operators[1])
        open_locks = self.open_locks(self.owners[n].account_id)
        if not open_locks:
            return
        lock = open_locks[0]
        body = {"note": "verified by phone", "version": lock.version}
        response, delta = self.step(lambda: self.client().post(f"/v1/review/locks/{lock.id}/unlock", json=body,
                                                               headers=headers))
        if lock.kind == LockKind.USER_REPORTED:
            assert response.status_code == 409, response.get_json()
            assert response.get_json()["code"] == "four_eyes_required"
            return
        assert response.status_code == 200, response.get_json()
        assert [(r.lock_id, r.event) for r in delta.lock_history] == [(lock.id, LockEvent.OPERATOR_UNLOCK)]
        # The lock's open appeal is closed at once, by the operator.
        closed = [r for r in delta.history if r.event == AppealEvent.LOCK_RELEASED]
        assert all(r.actor.startswith("operator:") for r in closed)

    # --- appeals: the user ---------------------------------------------------------------------------

    @rule(target=appeals, n=st.integers(0, ACCOUNTS - 1), kind=st.sampled_from(LockKind), by_phone=st.booleans())
    def lock_and_appeal(self, n: int, kind: LockKind, by_phone: bool) -> AppealRef:
        """The usual start: the account gets locked, its owner appeals (random walks rarely line these up)."""
        self.lock(n, kind)
        return self.submit(n, by_phone)

    @rule(steps=st.integers(1, 4))
    def drive_the_newest_appeal(self, steps: int) -> None:
        """A few right steps in a row on the newest real, open appeal (so reviews and actions are reached)."""
        for _ in range(steps):
            for ref in reversed(self.refs):
                appeal = self.appeal(ref)
                if appeal.lock_id is not None and self.effective(appeal) in OPEN_STATES:
                    self.next_right_step(ref)
                    break

    @rule(ref=appeals)
    def next_right_step(self, ref: AppealRef) -> None:
        """Whatever brings the appeal forward, done right (the random rules do it right or wrong, in any order)."""
        appeal = self.appeal(ref)
        state = self.effective(appeal)
        if state in VERIFIABLE_STATES:
            useful = self.useful(appeal)
            if VerificationMethod.CONTACT_CODE in useful:
                self.verify_contact_code(ref, right=True)
                return
            owner = self.owner_of(ref)
            choices = [m for m in (VerificationMethod.TOTP, VerificationMethod.RECOVERY_CODE,
                                   VerificationMethod.IDENTITY_DOCUMENT, VerificationMethod.RECENT_TRANSACTION)
                       if m in useful and (m not in (VerificationMethod.TOTP, VerificationMethod.RECOVERY_CODE)
                                           or (owner is not None and owner.totp_secret is not None))]
            if choices:
                self.verify_second(ref, choices[len(self.appeal_ids) % len(choices)], right=True)
        elif state is AppealState.PENDING_REVIEW:
            reviewed = set(self.session.scalars(select(AppealReview.operator_id)
                                                .where(AppealReview.appeal_id == appeal.id)))
            fresh = [n for n, op in enumerate(self.w.operators) if op.id not in reviewed]
            if fresh:
                self.decide(ref, fresh[0], approve=True, stale=False)
        elif self.pending(appeal, "reset_password"):
            self.reset_password_with_the_appeal(ref)
        elif self.pending(appeal, "enroll_totp"):
            self.enroll_totp_with_the_appeal(ref)

    @rule(target=appeals, n=st.integers(0, ACCOUNTS), by_phone=st.booleans())
    def submit(self, n: int, by_phone: bool) -> AppealRef:
        owner = self.owners[n] if n < ACCOUNTS else None
        identifier = self.unknown if owner is None else (owner.phone if by_phone else owner.email)
        appealable = None
        if owner is not None:
            for lock in self.open_locks(owner.account_id):
                existing = self.session.scalar(select(Appeal).where(Appeal.open_lock_id == lock.id))
                if existing is None or existing.state == AppealState.SUBMITTED:
                    appealable = lock
                    break
        response, delta = self.step(lambda: self.client().post(
            "/v1/appeals", json={"identifier": identifier, "statement": "It was not me."}))
        assert response.status_code == 202, response.get_json()
        body = response.get_json()
        codes = [m for m in delta.messages if m.event_type == "contact_code"]
        assert len(codes) == (1 if appealable is not None else 0)
        appeal = self.session.get(Appeal, uuid.UUID(body["appeal_id"]))
        assert appeal.lock_id == (appealable.id if appealable is not None else None)
        # Only the transitions of withdrawing an earlier, unproven appeal of the same lock.
        assert all(r.event == AppealEvent.WITHDRAW for r in delta.history)
        self.appeal_ids.append(body["appeal_id"])
        ref = AppealRef(body["appeal_id"], body["appeal_token"], n if owner is not None else None,
                        self.newest_code(owner) if appealable is not None and owner is not None else None)
        self.refs.append(ref)
        return ref

    def user(self, ref: AppealRef, method: str, path: str = "", json_body: Any = None) -> Any:
        return getattr(self.client(), method)(f"/v1/appeals/{ref.appeal_id}{path}", json=json_body,
                                              headers={"Authorization": f"Bearer {ref.token}"})

    @rule(ref=appeals, right=st.booleans())
    def verify_contact_code(self, ref: AppealRef, right: bool) -> None:
        appeal = self.appeal(ref)
        state = self.effective(appeal)
        wrong = "000000" if ref.code != "000000" else "000001"
        code = ref.code if right and ref.code is not None else wrong
        if right and ref.code is not None:
            row = self.session.scalar(select(ContactCode).where(ContactCode.owner_id == str(appeal.id),
                                                                ContactCode.voided_at.is_(None))
                                      .order_by(ContactCode.created_at.desc()).limit(1))
            fresh = (row is not None and row.used_at is None and self.clock.now() < row.expires_at
                     and row.attempts < self.policy.max_attempts[VerificationMethod.CONTACT_CODE])
        else:
            fresh = False
        useful = VerificationMethod.CONTACT_CODE in self.useful(appeal)
        can = self.can_attempt(appeal, VerificationMethod.CONTACT_CODE)
        response, delta = self.step(lambda: self.user(ref, "post", "/verifications",
                                                      {"method": "contact_code", "code": code}))
        problem = response.get_json().get("code")
        if state is AppealState.EXPIRED:
            assert (response.status_code, problem) == (409, "appeal_expired")
        elif state not in VERIFIABLE_STATES:
            assert (response.status_code, problem) == (409, "appeal_closed")
        elif not useful:
            assert (response.status_code, problem) == (409, "verification_not_needed")
        elif not can:
            assert (response.status_code, problem) == (409, "verification_attempts_exhausted")
        elif fresh and code != wrong:
            assert response.status_code == 200, response.get_json()
            self.expect_state_after_success(ref)
        else:
            assert response.status_code in (400, 409), response.get_json()
            assert not [r for r in delta.history if r.event not in SYSTEM_ONLY]

    @rule(ref=appeals)
    def resend_code(self, ref: AppealRef) -> None:
        appeal = self.appeal(ref)
        state = self.effective(appeal)
        needed = state is AppealState.SUBMITTED or (
            state is AppealState.VERIFYING and VerificationMethod.CONTACT_CODE in self.useful(appeal))
        sent_before, decoy = appeal.contact_codes_sent, appeal.lock_id is None
        response, delta = self.step(lambda: self.user(ref, "post", "/codes"))
        if needed and sent_before < self.policy.max_contact_codes:
            assert response.status_code == 202, response.get_json()
            owner = self.owner_of(ref)
            sent = [m for m in delta.messages if m.event_type == "contact_code"]
            assert len(sent) == (0 if decoy else 1)
            if sent and owner is not None:
                ref.code = self.newest_code(owner)
        else:
            assert response.status_code == 409, response.get_json()

    @rule(ref=appeals, method=st.sampled_from([VerificationMethod.TOTP, VerificationMethod.RECOVERY_CODE,
                                               VerificationMethod.RECENT_TRANSACTION,
                                               VerificationMethod.IDENTITY_DOCUMENT]), right=st.booleans())
    def verify_second(self, ref: AppealRef, method: VerificationMethod, right: bool) -> None:
        owner = self.owner_of(ref)
        body: dict[str, Any] = {"method": str(method)}
        answer = right
        if method is VerificationMethod.TOTP:
            code = self.totp_code(owner) if owner is not None and right else None
            answer = code is not None
            body["code"] = code or "000000"
        elif method is VerificationMethod.RECOVERY_CODE:
            answer = right and owner is not None and bool(owner.recovery_codes)
            body["code"] = owner.recovery_codes[0] if answer and owner is not None else "AAAA-BBBB-CCCC-DDDD"
        elif method is VerificationMethod.RECENT_TRANSACTION:
            amount, at = self.owners[ref.owner or 0].transactions[0]
            shown = Decimal(amount) if right else Decimal(amount) * 2
            body |= {"amount": str(shown), "date": at.date().isoformat()}
            answer = right and owner is not None
        else:
            body["document"] = DOCUMENT if right else "X0000000"
        appeal = self.appeal(ref)
        state = self.effective(appeal)
        useful = method in self.useful(appeal)
        can = self.can_attempt(appeal, method)
        response, delta = self.step(lambda: self.user(ref, "post", "/verifications", body))
        if method is VerificationMethod.RECOVERY_CODE and response.status_code == 200 and owner is not None:
            owner.recovery_codes.pop(0)
        problem = response.get_json().get("code")
        if state is AppealState.EXPIRED:
            assert (response.status_code, problem) == (409, "appeal_expired")
        elif state not in VERIFIABLE_STATES:
            assert (response.status_code, problem) == (409, "appeal_closed")
        elif state is AppealState.SUBMITTED or not useful:
            assert (response.status_code, problem) == (409, "verification_not_needed")
        elif not can:
            assert (response.status_code, problem) == (409, "verification_attempts_exhausted")
        elif answer:
            assert response.status_code == 200, response.get_json()
            self.expect_state_after_success(ref)
        else:
            assert response.status_code == 400, response.get_json()

    @rule(ref=appeals)
    def read(self, ref: AppealRef) -> None:
        expected = self.effective(self.appeal(ref))
        response, _ = self.step(lambda: self.user(ref, "get"))
        assert response.status_code == 200
        assert response.get_json()["state"] == expected

    @rule(ref=appeals)
    def withdraw(self, ref: AppealRef) -> None:
        state = self.effective(self.appeal(ref))
        response, _ = self.step(lambda: self.user(ref, "post", "/withdraw"))
        if state in (AppealState.SUBMITTED, AppealState.VERIFYING, AppealState.PENDING_REVIEW):
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["state"] == AppealState.WITHDRAWN
        else:
            assert response.status_code == 409, response.get_json()

    # --- required actions ----------------------------------------------------------------------------

    def pending(self, appeal: Appeal, action: str) -> bool:
        if self.effective(appeal) is not AppealState.APPROVED:
            return False
        lock = self.session.get(Lock, appeal.lock_id)
        done = {*appeal.completed_actions, *(lock.completed_actions if lock is not None else ())}
        return action in appeal.required_actions and action not in done

    @rule(ref=appeals)
    def reset_password_with_the_appeal(self, ref: AppealRef) -> None:
        owner = self.owner_of(ref)
        appeal = self.appeal(ref)
        pending = self.pending(appeal, "reset_password")
        password = next(self.passwords)
        body: dict[str, Any] = {"new_password": password}
        if owner is not None and owner.totp_secret is not None and pending:
            body["totp_code"] = self.totp_code(owner)
        response, _ = self.step(lambda: self.user(ref, "post", "/password", body))
        if not pending:
            assert (response.status_code, response.get_json()["code"]) == (409, "action_not_pending")
            return
        assert response.status_code == 200, response.get_json()
        assert owner is not None
        owner.password = password
        self.after_action(ref)

    @rule(ref=appeals)
    def enroll_totp_with_the_appeal(self, ref: AppealRef) -> None:
        owner = self.owner_of(ref)
        appeal = self.appeal(ref)
        pending = self.pending(appeal, "enroll_totp")
        started, delta = self.step(lambda: self.user(ref, "post", "/totp"))
        if not pending:
            assert (started.status_code, started.get_json()["code"]) == (409, "action_not_pending")
            return
        assert started.status_code == 201, started.get_json()
        assert owner is not None
        # The old authenticator (possibly the attacker's) is gone and the backend is told.
        assert len(delta.webhooks("mfa.disabled")) == (1 if owner.totp_secret is not None else 0)
        owner.totp_secret, owner.recovery_codes = None, []
        secret = started.get_json()["secret"]
        code = totp.code_at(secret, self.clock.now())
        confirmed, _ = self.step(lambda: self.user(ref, "post", "/totp/confirm", {"code": code}))
        assert confirmed.status_code == 200, confirmed.get_json()
        owner.totp_secret, owner.recovery_codes = secret, list(confirmed.get_json()["recovery_codes"])
        self.clock.advance(seconds=totp.PERIOD_SECONDS)
        self.after_action(ref)

    def after_action(self, ref: AppealRef) -> None:
        appeal = self.appeal(ref)
        lock = self.session.get(Lock, appeal.lock_id)
        if self.pending(appeal, "reset_password") or self.pending(appeal, "enroll_totp"):
            assert appeal.state == AppealState.APPROVED and lock.status == LockStatus.AWAITING_ACTIONS
        else:
            assert appeal.state == AppealState.RELEASED and lock.status == LockStatus.RELEASED

    @rule(n=st.integers(0, ACCOUNTS - 1))
    def reset_password_by_email_token(self, n: int) -> None:
        owner = self.owners[n]
        assert self.client().post("/v1/password-resets", json={"identifier": owner.email}).status_code == 202
        message = self.session.scalars(select(OutboxMessage).where(OutboxMessage.event_type == "password_reset",
                                                                   OutboxMessage.destination == owner.email)
                                       .order_by(OutboxMessage.id.desc()).limit(1)).one()
        token = json.loads(self.w.box.decrypt(message.sealed))["token"]
        password = next(self.passwords)
        body: dict[str, Any] = {"token": token, "new_password": password}
        if owner.totp_secret is not None:
            body["totp_code"] = self.totp_code(owner)
        awaiting = [lk for lk in self.open_locks(owner.account_id) if lk.status == LockStatus.AWAITING_ACTIONS
                    and set(lk.required_actions) <= {*lk.completed_actions, "reset_password"}]
        brute = [lk for lk in self.open_locks(owner.account_id)
                 if lk.status == LockStatus.ACTIVE and lk.kind == LockKind.BRUTE_FORCE]
        response, delta = self.step(lambda: self.client().post("/v1/password-resets/confirm", json=body))
        assert response.status_code == 204, response.get_json()
        owner.password = password
        released = {r.lock_id for r in delta.lock_history if r.to_status == LockStatus.RELEASED}
        assert released == {lk.id for lk in awaiting + brute}

    # --- operators -----------------------------------------------------------------------------------

    @rule(ref=appeals, reviewer=st.integers(0, 2), approve=st.booleans(), stale=st.booleans())
    def decide(self, ref: AppealRef, reviewer: int, approve: bool, stale: bool) -> None:
        op = self.w.operators[reviewer]
        headers = self.operator_headers(op)
        appeal = self.appeal(ref)
        state = self.effective(appeal)
        stale = stale and appeal.version > 1 and state is AppealState.PENDING_REVIEW
        reviewed = self.session.scalar(select(AppealReview.id).where(AppealReview.appeal_id == appeal.id,
                                                                     AppealReview.operator_id == op.id))
        approvals = self.session.scalar(select(func.count()).select_from(AppealReview).where(
            AppealReview.appeal_id == appeal.id, AppealReview.approve.is_(True)))
        body = {"approve": approve, "expected_version": appeal.version - 1 if stale else appeal.version,
                "user_reason": None if approve else "We could not confirm your identity."}
        response, delta = self.step(lambda: self.client().post(
            f"/v1/review/appeals/{ref.appeal_id}/decision", json=body, headers=headers))
        if stale:
            assert response.status_code == 409, response.get_json()
            return
        if state is not AppealState.PENDING_REVIEW:
            assert response.status_code == 409, response.get_json()
            return
        if reviewed is not None:
            assert (response.status_code, response.get_json()["code"]) == (409, "four_eyes_violation")
            return
        assert response.status_code == 200, response.get_json()
        after = self.appeal(ref)
        lock = self.session.get(Lock, after.lock_id)
        if not approve:
            assert after.state == AppealState.REJECTED and lock.status != LockStatus.RELEASED
        elif approvals + 1 < self.policy.for_kind(after.lock_kind).reviewers:
            assert after.state == AppealState.PENDING_REVIEW and lock.status == LockStatus.ACTIVE
            assert not delta.webhooks("appeal.decided")
        elif after.required_actions:
            assert after.state == AppealState.APPROVED and lock.status == LockStatus.AWAITING_ACTIONS
        else:
            assert after.state == AppealState.RELEASED and lock.status == LockStatus.RELEASED

    # --- time ----------------------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 16, 25 * 60, 73 * 60]))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @rule()
    def sweep(self) -> None:
        runner = self.w.app.test_cli_runner()
        due_appeals = [a for a in self.session.scalars(select(Appeal).where(Appeal.account_id.in_(self.account_ids)))
                       if a.state in VERIFIABLE_STATES and a.expires_at <= self.clock.now()]

        def run() -> None:
            for command in (["locks", "expire"], ["appeals", "expire"]):
                result = runner.invoke(args=command)
                assert result.exit_code == 0, result.output

        _, delta = self.step(run)
        expired = {r.appeal_id for r in delta.history if r.event == AppealEvent.EXPIRE}
        assert {a.id for a in due_appeals} <= expired

    # --- invariants ----------------------------------------------------------------------------------

    @invariant()
    def status_agrees_with_locks(self) -> None:
        statuses = self.statuses()
        for account_id in self.account_ids:
            if account_id not in statuses:
                return  # before initialisation
            open_count = len(self.open_locks(account_id))
            assert (statuses[account_id] == AccountStatus.LOCKED) == (open_count > 0), (
                f"{account_id}: {statuses[account_id]} with {open_count} open lock(s)")

    @invariant()
    def appeals_agree_with_their_locks_and_history(self) -> None:
        self.session.expire_all()
        for appeal_id in self.appeal_ids:
            appeal = self.session.get(Appeal, uuid.UUID(appeal_id))
            if appeal.lock_id is None:
                assert appeal.state in (AppealState.SUBMITTED, AppealState.EXPIRED, AppealState.WITHDRAWN)
                continue
            lock = self.session.get(Lock, appeal.lock_id)
            if appeal.state == AppealState.RELEASED:
                assert lock.status == LockStatus.RELEASED, f"appeal {appeal.id} released, lock {lock.status}"
            assert (appeal.open_lock_id is not None) == (appeal.state in OPEN_STATES)
            state = AppealState.SUBMITTED
            history = self.session.scalars(select(AppealHistory).where(AppealHistory.appeal_id == appeal.id)
                                           .order_by(AppealHistory.id))
            events = []
            for row in history:
                assert row.from_state == state, f"appeal {appeal.id}: history jumps from {state} to {row.from_state}"
                state = AppealState(row.to_state)
                events.append(row.event)
            assert state == appeal.state
            if AppealEvent.APPROVE in events:
                approvers = self.session.scalars(select(AppealReview.operator_id).where(
                    AppealReview.appeal_id == appeal.id, AppealReview.approve.is_(True))).all()
                assert len(set(approvers)) == len(approvers) == self.policy.for_kind(appeal.lock_kind).reviewers

    @invariant()
    def lock_history_replays(self) -> None:
        for lock in self.session.scalars(select(Lock).where(Lock.account_id.in_(self.account_ids))):
            rows = self.session.scalars(select(LockHistory).where(LockHistory.lock_id == lock.id)
                                        .order_by(LockHistory.id)).all()
            status = None
            for row in rows:
                assert row.from_status == status
                status = row.to_status
            assert status == lock.status

    @invariant()
    def audit_chain_verifies(self) -> None:
        """The step's entries link onto the chain verified before it."""
        _, broken = verify_audit_log(self.session, after=self.audit_verified)
        assert broken is None, broken
        self.audit_verified = chain_head(self.session)

    def teardown(self) -> None:
        """The whole chain, again: an entry that a later step rewrote is caught in its example too."""
        _, broken = verify_audit_log(self.session)
        assert broken is None, broken


@pytest.fixture
def world(settings, connection, db_session, clock) -> World:
    app = create_app(make_settings(settings, **LIMITS), clock=clock, session_factory=lambda: joined_session(connection))
    key = issue_key(db_session, clock, "wallet-backend", ALL_SCOPES)
    operators = [make_operator(app, db_session, clock, name, "reviewer") for name in ("rita", "omar", "ines")]
    return World(app=app, session=db_session, clock=clock, box=SecretBox(settings.secrets.encryption_keys),
                 api=ApiClient(app.test_client(), key), operators=operators)


def run(world: World, budget: dict[str, int]) -> None:
    TALLY.clear()
    run_state_machine_as_test(
        lambda: AppealLifecycle(world),
        settings=settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), **budget),
    )
    print("appeal lifecycle reached:", *sorted(TALLY.items()), sep="\n  ")


def test_appeal_lifecycle(world):
    run(world, NORMAL)


@pytest.mark.slow
def test_appeal_lifecycle_long(world):
    run(world, LONG)
