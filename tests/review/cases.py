"""Cases for the review and console tests, made through the real APIs (the wallet backend's and the operators')."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from security.clock import FrozenClock
from tests.operators.factories import TestOperator, make_operator

STEP = timedelta(seconds=30)
CONTEXT = {"ip": "84.150.20.10", "country": "DE", "device_id": "dev-1", "user_agent": "Mozilla/5.0"}


@dataclass
class Cases:
    api: Any  # the wallet backend (service key)
    client: Any
    clock: FrozenClock
    app: Any
    session: Any
    counter: int = 0

    def account(self, account_id: str) -> None:
        response = self.api.put(f"/v1/accounts/{account_id}", json={
            "email": f"{account_id}@example.com", "home_country": "DE"})
        assert response.status_code in (200, 201), response.get_json()

    def risk_lock(self, account_id: str) -> dict[str, Any]:
        """A critical transaction (deny-listed payee) makes the risk engine lock the account."""
        self.account(account_id)
        self.api.put("/v1/deny-list/address/0xbad", json={"reason": "known mixer"})
        self.counter += 1
        answer = self.api.post("/v1/events/transaction", json={
            "event_id": f"tx-{self.counter}", "account_id": account_id, "amount": "900.00", "currency": "EUR",
            "destination": {"address": "0xbad", "country": "DE"}, "occurred_at": self.clock.now().isoformat(),
            "context": CONTEXT,
        }).get_json()
        assert answer["decision"] == "block", answer
        return answer

    def operator(self, name: str, role: str) -> TestOperator:
        return make_operator(self.app, self.session, self.clock, name, role)

    def token(self, op: TestOperator) -> dict[str, str]:
        """Sign ``op`` in through the API; return the Authorization header."""
        self.clock.advance(STEP)
        response = self.client.post("/v1/review/tokens", json={
            "name": op.name, "password": op.password, "totp_code": op.code(self.clock.now())})
        assert response.status_code == 201, response.get_json()
        return {"Authorization": f"Bearer {response.get_json()['token']}"}


