"""The request mix: which operation comes next and what its JSON body is.

Bodies follow the API contract (DESIGN.md field names; the pydantic models in ``security.risk.schemas``
validate them on the service and on the floor app). Event ids carry the run tag so a replay of the same
benchmark never collides with stored events (a collision would be answered from the idempotency store,
which is faster than scoring and would flatter the numbers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bench.dataset import BENCH_PASSWORD, WRONG_PASSWORD, Person, amount_like, person

TRANSACTION: Final = "tx"
LOGIN_EVENT: Final = "login_event"
LOGIN_CHECK: Final = "login_check"
PATHS: Final = {
    TRANSACTION: "/v1/events/transaction",
    LOGIN_EVENT: "/v1/events/login",
    LOGIN_CHECK: "/v1/logins",
}
#: The issue's mix: 70% transaction events, 25% login events, 5% password login checks.
FULL_MIX: Final = {TRANSACTION: 70, LOGIN_EVENT: 25, LOGIN_CHECK: 5}
#: The scored events only (what the floor app also serves), in the same 70:25 proportion.
EVENT_MIX: Final = {TRANSACTION: 70, LOGIN_EVENT: 25}
LOGIN_ONLY: Final = {LOGIN_CHECK: 1}
NAMED_MIXES: Final = {"full": FULL_MIX, "events": EVENT_MIX, "logins": LOGIN_ONLY, "tx": {TRANSACTION: 1}}
#: Shares of unusual traffic (small, so brute-force locks stay rare and the scoring path stays the norm).
NEW_PAYEE_SHARE: Final = 0.15
FAILED_LOGIN_EVENT_SHARE: Final = 0.03
WRONG_PASSWORD_SHARE: Final = 0.05
AWAY_SHARE: Final = 0.02  # a login/transaction from another device and IP


def parse_mix(text: str) -> dict[str, int]:
    """``full`` / ``events`` / ``logins`` / ``tx``, or ``tx=70,login_event=25,login_check=5``."""
    if text in NAMED_MIXES:
        return dict(NAMED_MIXES[text])
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in PATHS or not weight.strip().isdigit():
            raise ValueError(f"bad mix item {part!r}; known operations: {', '.join(PATHS)}")
        mix[name.strip()] = int(weight)
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("empty mix")
    return mix


@dataclass(frozen=True)
class Request:
    """One request to send: the operation, the path, the body and the id a 2xx answer confirms."""

    op: str
    path: str
    body: dict[str, Any]
    ident: str


class Workload:
    """Draws requests for ``accounts`` synthetic accounts in the proportions of ``mix``."""

    def __init__(self, *, seed: int, accounts: int, mix: dict[str, int], run_tag: str, stream: int = 0) -> None:
        self._seed = seed
        self._accounts = accounts
        self._ops = list(mix)
        self._weights = [mix[op] for op in self._ops]
        self._tag = run_tag
        self._rng = random.Random(f"{seed}:{run_tag}:{stream}")
        self._stream = stream
        self._n = 0
        self._people: dict[int, Person] = {}

    def _person(self, index: int) -> Person:
        found = self._people.get(index)
        if found is None:
            found = self._people[index] = person(self._seed, index)
        return found

    def next(self, now: datetime) -> Request:
        """The next request; ``now`` becomes the event's ``occurred_at``."""
        rng = self._rng
        op = rng.choices(self._ops, self._weights)[0]
        who = self._person(rng.randrange(self._accounts))
        self._n += 1
        event_id = f"{self._tag}-{self._stream}-{self._n}"
        away = rng.random() < AWAY_SHARE
        context = {
            "ip": f"192.0.2.{rng.randrange(1, 255)}" if away else rng.choice(who.ips),
            "device_id": f"dev-new-{event_id}" if away else rng.choice(who.devices),
            "user_agent": who.user_agent,
            "country": who.country,
            "lat": who.lat,
            "lon": who.lon,
        }
        when = now.isoformat()
        if op == TRANSACTION:
            new_payee = rng.random() < NEW_PAYEE_SHARE
            body: dict[str, Any] = {
                "event_id": event_id,
                "account_id": who.account_id,
                "amount": str(amount_like(rng, who)),
                "currency": who.currency,
                "destination": {
                    "address": f"bc1qnew{event_id}" if new_payee else rng.choice(who.payees),
                    "country": who.country,
                },
                "occurred_at": when,
                "context": context,
            }
            return Request(op, PATHS[op], body, event_id)
        if op == LOGIN_EVENT:
            outcome = "failure" if rng.random() < FAILED_LOGIN_EVENT_SHARE else "success"
            body = {
                "event_id": event_id,
                "account_id": who.account_id,
                "occurred_at": when,
                "outcome": outcome,
                "method": "passkey",
                "context": context,
            }
            return Request(op, PATHS[op], body, event_id)
        password = WRONG_PASSWORD if rng.random() < WRONG_PASSWORD_SHARE else BENCH_PASSWORD
        context["occurred_at"] = when
        body = {"account_id": who.account_id, "password": password, "context": context}
        return Request(op, PATHS[op], body, who.account_id)
