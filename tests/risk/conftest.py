"""Fixtures and flow helpers for the risk and lock API tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from security.clock import FrozenClock
from security.delivery.outbox import OutboxMessage
from security.risk.rules import RuleSet
from security.risk.views import RULESET_KEY
from security.runtime import runtime

PASSWORD = "violet-harbour-engine-42"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
BERLIN = {"ip": "84.150.20.10", "country": "DE", "lat": 52.52, "lon": 13.405, "asn": "3320",
          "device_id": "dev-laptop", "user_agent": CHROME}


@dataclass
class Flows:
    """Helpers that drive the API like the wallet backend would (the tutorial's AuthActions)."""

    api: Any
    clock: FrozenClock
    counter: int = 0

    def account(self, account_id: str = "acc-1", *, home_country: str = "DE", password: bool = True,
                **profile: Any) -> None:
        body = {"email": f"{account_id}@example.com", "home_country": home_country, **profile}
        assert self.api.put(f"/v1/accounts/{account_id}", json=body).status_code in (200, 201)
        if password:
            assert self.api.put(f"/v1/accounts/{account_id}/password",
                                json={"password": PASSWORD}).status_code == 204

    def login(self, account_id: str = "acc-1", password: str = PASSWORD, **context: Any) -> Any:
        return self.api.post("/v1/logins", json={"account_id": account_id, "password": password,
                                                 "context": {**BERLIN, **context}})

    def next_id(self) -> str:
        self.counter += 1
        return f"evt-{self.counter}"

    def transaction(self, account_id: str = "acc-1", amount: str = "50.00", *, address: str = "0xabc",
                    country: str = "DE", occurred_at: datetime | None = None, event_id: str | None = None,
                    **extra: Any) -> Any:
        body = {
            "event_id": event_id or self.next_id(), "account_id": account_id, "amount": amount,
            "currency": "EUR", "destination": {"address": address, "country": country},
            "occurred_at": (occurred_at or self.clock.now()).isoformat(), "context": {**BERLIN}, **extra,
        }
        return self.api.post("/v1/events/transaction", json=body)

    def change(self, change: str, account_id: str = "acc-1", *, occurred_at: datetime | None = None,
               event_id: str | None = None, **context: Any) -> Any:
        return self.api.post("/v1/events/account-change", json={
            "event_id": event_id or self.next_id(), "account_id": account_id, "change": change,
            "occurred_at": (occurred_at or self.clock.now()).isoformat(), "context": {**BERLIN, **context},
        })

    def warm_up(self, account_id: str = "acc-1", logins: int = 5, *, step: timedelta = timedelta(hours=8),
                **context: Any) -> None:
        """Build a familiar login history."""
        for _ in range(logins):
            response = self.login(account_id, **context)
            assert response.get_json()["decision"] == "allow", response.get_json()
            self.clock.advance(step)


@pytest.fixture
def flows(api: Any, clock: FrozenClock) -> Flows:
    return Flows(api, clock)


def webhooks(session: Session, event_type: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(OutboxMessage).where(OutboxMessage.event_type == event_type).order_by(OutboxMessage.id))
    return [row.payload["data"] for row in rows]


def use_ruleset(app: Any, ruleset: RuleSet) -> None:
    runtime(app).extras[RULESET_KEY] = ruleset

