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




DOCUMENT = "C01X00T47"


def contact_code(session: Any, app: Any, destination: str) -> str:
    """The code sealed in the newest contact-code message to ``destination`` (what the user would read)."""
    import json

    from sqlalchemy import select

    from security.delivery.outbox import OutboxMessage
    from security.runtime import runtime

    sealed = session.scalars(
        select(OutboxMessage.sealed).where(OutboxMessage.event_type == "contact_code",
                                           OutboxMessage.destination == destination)
        .order_by(OutboxMessage.id.desc())
    ).first()
    assert sealed, f"no contact code sent to {destination}"
    return str(json.loads(runtime(app).secret_box.decrypt(sealed))["code"])


def appeal_waiting_for_review(client: Any, api: Any, session: Any, app: Any, headers: dict[str, str],
                              account_id: str) -> dict[str, str]:
    """An operator lock, appealed by its owner who proves contact and identity: it waits for two reviewers.

    Returns the appeal id, its token (the user's) and the lock id.
    """
    email = f"{account_id}@example.com"
    assert api.put(f"/v1/accounts/{account_id}", json={
        "email": email, "home_country": "DE", "identity_document": DOCUMENT}).status_code in (200, 201)
    assert api.put(f"/v1/accounts/{account_id}/password", json={"password": "first-owner-passphrase-93"}
                   ).status_code == 204
    lock = client.post(f"/v1/review/accounts/{account_id}/locks", json={"note": "fraud report by phone"},
                       headers=headers).get_json()
    started = client.post("/v1/appeals", json={"identifier": account_id, "statement": "It was me, honestly."})
    assert started.status_code == 202, started.get_json()
    appeal_id, token = started.get_json()["appeal_id"], started.get_json()["appeal_token"]
    user = {"Authorization": f"Bearer {token}"}
    session.expire_all()
    code = contact_code(session, app, email)
    # End the read at once: on SQLite every transaction holds the write lock the next requests need.
    session.commit()
    for body in ({"method": "contact_code", "code": code}, {"method": "identity_document", "document": DOCUMENT}):
        response = client.post(f"/v1/appeals/{appeal_id}/verifications", json=body, headers=user)
        assert response.status_code == 200, response.get_json()
    assert response.get_json()["state"] == "pending_review"
    return {"appeal_id": appeal_id, "token": token, "lock_id": lock["lock_id"]}
