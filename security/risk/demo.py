"""``flask --app app demo``: a realistic synthetic week, so a newcomer sees decisions, locks and reasons.

Ordinary traffic (logins the backend authenticated, payments to usual payees, the odd trip and new
payee) for a few dozen accounts, plus three attacks, all through the real services:

1. a brute-force attack on one account (temporary locks with backoff, then an indefinite lock);
2. credential stuffing from one IP across many accounts (HTTP 429, nobody locked);
3. an account takeover chain (phished password -> e-mail and MFA changes -> a draining withdrawal).

Deterministic: the same seed gives the same week.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from security.accounts.models import Account
from security.accounts.services import AccountService, Profile
from security.audit.services import AuditLog
from security.clients.services import ClientService
from security.clock import FrozenClock
from security.db import session_scope
from security.delivery.outbox import Outbox
from security.entropy import SeededEntropy
from security.locks.models import Lock
from security.locks.services import LockService
from security.permissions import ALL_SCOPES
from security.risk.denylist import DenyListService
from security.risk.features import EventKind
from security.risk.models import DenyListKind, RiskEvent
from security.risk.rules import RuleSet
from security.risk.schemas import (
    AccountChangeEventIn,
    ChangeKind,
    ContextIn,
    DestinationIn,
    LoginCheckIn,
    LoginEventIn,
    TransactionEventIn,
)
from security.risk.second_factor import NoSecondFactor
from security.risk.services import IpThrottled, RiskService
from security.runtime import Runtime
from security.web.deps import webhook_endpoint_names

ACTOR: Final = "demo"
DAYS: Final = 7
ACCOUNTS: Final = 36
DEMO_PASSWORD: Final = "demo-harbour-violet-2026"  # noqa: S105 - published demo data, not a secret
DRAIN_ADDRESS: Final = "bc1qdemoattackerwallet0000000000000000000"
MIXER_ADDRESS: Final = "0x000000000000000000000000000000000000dead"

CITIES: Final = [
    ("DE", "Berlin", 52.52, 13.40, "3320", "84.150"), ("DE", "Munich", 48.14, 11.58, "3320", "91.64"),
    ("FR", "Paris", 48.86, 2.35, "3215", "90.12"), ("ES", "Madrid", 40.42, -3.70, "3352", "88.27"),
    ("GB", "London", 51.51, -0.13, "2856", "81.2"), ("US", "New York", 40.71, -74.01, "7922", "73.45"),
    ("NL", "Amsterdam", 52.37, 4.90, "1136", "145.53"), ("IT", "Milan", 45.46, 9.19, "3269", "93.41"),
]
BROWSERS: Final = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
]
FIRST_NAMES: Final = ["mia", "noah", "emma", "liam", "lea", "ben", "sofia", "paul", "ella", "finn", "lina",
                      "jonas", "clara", "elias", "marie", "luca", "anna", "felix", "ida", "leon"]
ATTACKER: Final = {"ip": "45.155.205.99", "country": "RU", "asn": "204428", "lat": 55.75, "lon": 37.62,
                   "device_id": "kali-vm", "user_agent": "python-requests/2.31.0"}
STUFFING_IP: Final = "185.220.101.47"


@dataclass(frozen=True)
class Persona:
    """One synthetic account holder."""

    account_id: str
    country: str
    city: str
    lat: float
    lon: float
    asn: str
    ip: str
    device: str
    user_agent: str
    payees: tuple[str, ...]
    typical_amount: Decimal
    age_days: int


@dataclass
class DemoReport:
    """What the demo produced."""

    api_key: str
    accounts: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    locks: list[str] = field(default_factory=list)
    restricted: str | None = None


def personas(rng: random.Random) -> list[Persona]:
    """Build the cast: stable homes, devices and payees."""
    cast = []
    for n in range(ACCOUNTS):
        country, city, lat, lon, asn, prefix = rng.choice(CITIES)
        name = f"{FIRST_NAMES[n % len(FIRST_NAMES)]}-{n:02d}"
        cast.append(Persona(
            account_id=name, country=country, city=city, lat=lat + rng.uniform(-0.05, 0.05),
            lon=lon + rng.uniform(-0.05, 0.05), asn=asn, ip=f"{prefix}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            device=f"dev-{name}", user_agent=rng.choice(BROWSERS),
            payees=tuple(f"0x{rng.getrandbits(160):040x}" for _ in range(rng.randint(2, 4))),
            typical_amount=Decimal(rng.choice([25, 40, 60, 120, 250, 400])), age_days=rng.randint(30, 900),
        ))
    return cast


class Demo:
    """Drives the real services through a synthetic week on a frozen clock."""

    def __init__(self, rt: Runtime, ruleset: RuleSet, *, start: datetime, seed: int,
                 session_factory: Callable[[], Session], daily_logins: tuple[int, int] = (1, 3)) -> None:
        self._rt = rt
        self._ruleset = ruleset
        self._clock = FrozenClock(start)
        self._entropy = SeededEntropy(seed)
        self._rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
        self._factory = session_factory
        self._events = 0
        self._daily_logins = daily_logins
        self.cast = personas(self._rng)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with session_scope(self._factory) as session:
            yield session

    def _services(self, session: Session) -> tuple[RiskService, AccountService, LockService]:
        audit = AuditLog(session, clock=self._clock)
        outbox = Outbox(session, clock=self._clock, entropy=self._entropy, secret_box=self._rt.secret_box,
                        webhook_endpoints=webhook_endpoint_names(self._rt))
        locks = LockService(session, clock=self._clock, entropy=self._entropy, audit=audit, outbox=outbox)
        accounts = AccountService(session, clock=self._clock, audit=audit, outbox=outbox,
                                  hasher=self._rt.password_hasher, policy=self._rt.password_policy,
                                  identity_hmac_key=self._rt.settings.secrets.identity_hmac_key)
        risk = RiskService(session, clock=self._clock, audit=audit, outbox=outbox, ruleset=self._ruleset,
                           locks=locks, accounts=accounts, second_factor=NoSecondFactor())
        return risk, accounts, locks

    def _event_id(self) -> str:
        self._events += 1
        return f"demo-{self._events:06d}"

    def _context(self, p: Persona, **override: object) -> ContextIn:
        base: dict[str, object] = {"ip": p.ip, "country": p.country, "lat": round(p.lat, 4),
                                   "lon": round(p.lon, 4), "asn": p.asn, "device_id": p.device,
                                   "user_agent": p.user_agent}
        return ContextIn.model_validate({**base, **override})

    def run(self) -> DemoReport:
        """Play the week; return a summary."""
        with self._session() as session:
            # The key comes from real randomness: a seeded demo must not leave a guessable credential.
            issued = ClientService(session, clock=self._clock, entropy=self._rt.entropy,
                                   audit=AuditLog(session, clock=self._clock)).create(
                "demo-backend", ALL_SCOPES, actor=ACTOR)
            report = DemoReport(api_key=issued.api_key)
            self._client_id = issued.client.id
            _, accounts, _ = self._services(session)
            for p in self.cast:
                account, _ = accounts.upsert(p.account_id, Profile(
                    email=f"{p.account_id}@example.org", phone=None, home_country=p.country,
                    identity_document=None), actor=ACTOR)
                account.created_at = self._clock.now() - timedelta(days=p.age_days)
            for p in self.cast[:2] + self.cast[10:30]:  # the attack stories' targets check passwords
                accounts.set_password(p.account_id, DEMO_PASSWORD, actor=ACTOR)
            DenyListService(session, clock=self._clock, audit=AuditLog(session, clock=self._clock)).put(
                DenyListKind.ADDRESS, MIXER_ADDRESS, reason="sanctioned mixer (demo)", actor=ACTOR)
            report.accounts = len(self.cast)
        start = self._clock.now()
        for day in range(DAYS):
            self._ordinary_day(start + timedelta(days=day), report)
            if day == 2:
                self._brute_force(start + timedelta(days=day, hours=14), report)
            if day == 3:
                self._credential_stuffing(start + timedelta(days=day, hours=3), report)
            if day == DAYS - 1:
                self._unusual_payment(start + timedelta(days=day, hours=23), report)
            if day == 5:
                self._takeover(start + timedelta(days=day, hours=22), report)
        with self._session() as session:
            for lock in session.scalars(select(Lock).order_by(Lock.created_at)):
                rule = lock.reasons[0]["rule"] if lock.reasons else "-"
                report.locks.append(f"{lock.reference}  {lock.account_id:<10} {lock.kind:<12} {lock.status:<9} "
                                    f"{rule}")
        return report

    def _ordinary_day(self, day: datetime, report: DemoReport) -> None:
        rng = self._rng
        moments: list[tuple[datetime, str, Persona]] = []
        for p in self.cast:
            for _ in range(rng.randint(*self._daily_logins)):
                moments.append((day + timedelta(minutes=rng.randint(7 * 60, 23 * 60)), "login", p))
            for _ in range(rng.choice([0, 0, 1, 1, 2])):
                moments.append((day + timedelta(minutes=rng.randint(8 * 60, 22 * 60)), "tx", p))
            if rng.random() < 0.03:
                moments.append((day + timedelta(minutes=rng.randint(9 * 60, 20 * 60)), "change", p))
        moments.sort(key=lambda m: (m[0], m[2].account_id))
        with self._session() as session:
            risk, _, _ = self._services(session)
            for at, what, p in moments:
                self._clock.set(at)
                if what == "login":
                    travelling = rng.random() < 0.02
                    ctx = self._context(p, **({"ip": f"80.{rng.randrange(256)}.7.9", "asn": "12345",
                                               "country": "PT", "lat": 38.72, "lon": -9.14} if travelling else {}))
                    body: LoginEventIn | TransactionEventIn | AccountChangeEventIn = LoginEventIn(
                        event_id=self._event_id(), account_id=p.account_id, occurred_at=at, outcome="success",
                        method="passkey", context=ctx)
                    kind = EventKind.LOGIN
                elif what == "tx":
                    new_payee = rng.random() < 0.08
                    payee = f"0x{rng.getrandbits(160):040x}" if new_payee else rng.choice(p.payees)
                    if rng.random() < 0.004:
                        payee = MIXER_ADDRESS
                    amount = (p.typical_amount * Decimal(str(round(rng.uniform(0.5, 1.6), 2)))).quantize(
                        Decimal("0.01"))
                    body = TransactionEventIn(
                        event_id=self._event_id(), account_id=p.account_id, amount=str(amount), currency="EUR",
                        destination=DestinationIn(address=payee, country=p.country if not new_payee
                                                  else rng.choice(["DE", "FR", "US", "NG", "PH"])),
                        occurred_at=at, context=self._context(p))
                    kind = EventKind.TRANSACTION
                else:
                    body = AccountChangeEventIn(event_id=self._event_id(), account_id=p.account_id,
                                                change=rng.choice([ChangeKind.PHONE, ChangeKind.DEVICE_ADDED]),
                                                occurred_at=at, context=self._context(p))
                    kind = EventKind.ACCOUNT_CHANGE
                answer, _ = risk.ingest(kind, body, client_id=self._client_id)
                report.decisions[f"{kind}:{answer['decision']}"] += 1

    def _check(self, risk: RiskService, account_id: str, password: str, ctx: ContextIn,
               report: DemoReport) -> str:
        try:
            outcome = risk.check_login(LoginCheckIn(account_id=account_id, password=password, context=ctx),
                                       client_id=self._client_id)
        except IpThrottled:
            report.throttled += 1
            return "throttled"
        report.decisions[f"login:{outcome.decision}"] += 1
        return str(outcome.decision)

    def _brute_force(self, at: datetime, report: DemoReport) -> None:
        """Rotating IPs guess one account's password: four rounds an hour apart."""
        victim = self.cast[0]
        for round_ in range(4):
            self._clock.set(at + timedelta(hours=round_, minutes=1))
            for n in range(6):
                self._clock.advance(seconds=20)
                with self._session() as session:
                    risk, _, _ = self._services(session)
                    ctx = self._context(victim, **{**ATTACKER, "ip": f"45.155.{round_}.{n + 10}"})
                    self._check(risk, victim.account_id, f"password{round_}{n}!", ctx, report)

    def _credential_stuffing(self, at: datetime, report: DemoReport) -> None:
        """One IP tries a leaked password on many accounts."""
        self._clock.set(at)
        for p in self.cast[10:34]:
            self._clock.advance(seconds=3)
            with self._session() as session:
                risk, _, _ = self._services(session)
                self._check(risk, p.account_id, "Summer2025!", self._context(
                    p, ip=STUFFING_IP, country="NL", asn="208294", lat=None, lon=None, device_id=None,
                    user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/119.0"), report)

    def _unusual_payment(self, at: datetime, report: DemoReport) -> None:
        """An outlier amount to a new payee outside the corridors: held for review, account restricted."""
        self._clock.set(at)
        with self._session() as session:
            # The busiest payer (outside the other stories) has enough history for the amount rules.
            attacked = {self.cast[0].account_id, self.cast[1].account_id}
            busiest = session.execute(
                select(RiskEvent.account_id, func.count()).where(
                    RiskEvent.kind == EventKind.TRANSACTION, RiskEvent.account_id.not_in(attacked))
                .group_by(RiskEvent.account_id).order_by(func.count().desc(), RiskEvent.account_id).limit(1)
            ).first()
            payer = next(p for p in self.cast if busiest is not None and p.account_id == busiest.account_id)
            report.restricted = payer.account_id
            risk, _, _ = self._services(session)
            body = TransactionEventIn(
                event_id=self._event_id(), account_id=payer.account_id,
                amount=str(payer.typical_amount * 12), currency="EUR",
                destination=DestinationIn(address="0xfeedfacefeedfacefeedfacefeedfacefeedface", country="NG"),
                occurred_at=at, context=self._context(payer))
            answer, _ = risk.ingest(EventKind.TRANSACTION, body, client_id=self._client_id)
            report.decisions[f"{EventKind.TRANSACTION}:{answer['decision']}"] += 1

    def _takeover(self, at: datetime, report: DemoReport) -> None:
        """Phished password, new device abroad, e-mail and MFA changes, then a drain."""
        victim = self.cast[1]
        self._clock.set(at)
        steps: list[tuple[EventKind, Callable[[], LoginEventIn | TransactionEventIn | AccountChangeEventIn]]] = [
            (EventKind.ACCOUNT_CHANGE, lambda: AccountChangeEventIn(
                event_id=self._event_id(), account_id=victim.account_id, change=ChangeKind.EMAIL,
                occurred_at=self._clock.now(), context=ContextIn.model_validate(ATTACKER))),
            (EventKind.ACCOUNT_CHANGE, lambda: AccountChangeEventIn(
                event_id=self._event_id(), account_id=victim.account_id, change=ChangeKind.MFA_DISABLED,
                occurred_at=self._clock.now(), context=ContextIn.model_validate(ATTACKER))),
            (EventKind.TRANSACTION, lambda: TransactionEventIn(
                event_id=self._event_id(), account_id=victim.account_id, amount="4850.00", currency="EUR",
                destination=DestinationIn(address=DRAIN_ADDRESS, country="RU"), occurred_at=self._clock.now(),
                balance_before="5000.00", context=ContextIn.model_validate(ATTACKER))),
        ]
        with self._session() as session:
            risk, _, _ = self._services(session)
            self._check(risk, victim.account_id, DEMO_PASSWORD, ContextIn.model_validate(ATTACKER), report)
        for kind, build in steps:
            self._clock.advance(minutes=4)
            with self._session() as session:
                risk, _, _ = self._services(session)
                answer, _ = risk.ingest(kind, build(), client_id=self._client_id)
                report.decisions[f"{kind}:{answer['decision']}"] += 1


def database_is_empty(session: Session) -> bool:
    """Return whether there is no account and no event yet (the demo wants a fresh database)."""
    accounts = session.scalar(select(func.count()).select_from(Account)) or 0
    events = session.scalar(select(func.count()).select_from(RiskEvent)) or 0
    return accounts == 0 and events == 0
