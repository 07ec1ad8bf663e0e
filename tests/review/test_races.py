"""Two operators acting on the same case at the same moment: exactly one wins, the other gets 409."""

from __future__ import annotations

import threading
from datetime import timedelta

from security.permissions import ALL_SCOPES
from security.runtime import runtime
from tests.conftest import issue_key
from tests.operators.factories import make_operator

STEP = timedelta(seconds=30)


def setup_case(app, clock):
    session = runtime(app).session_factory()
    try:
        key = issue_key(session, clock, "backend", ALL_SCOPES)
        ops = [make_operator(app, session, clock, name, "reviewer") for name in ("rita", "omar")]
    finally:
        session.close()
    client = app.test_client()
    assert client.put("/v1/accounts/a1", json={"home_country": "DE"},
                      headers={"Authorization": f"Bearer {key}"}).status_code == 201
    headers = []
    for op in ops:
        clock.advance(STEP)
        token = client.post("/v1/review/tokens", json={
            "name": op.name, "password": op.password, "totp_code": op.code(clock.now())}).get_json()["token"]
        headers.append({"Authorization": f"Bearer {token}"})
    lock = client.post("/v1/review/accounts/a1/locks", json={"note": "manual hold"}, headers=headers[0]).get_json()
    return lock, headers


def race(app, requests):
    """Send the requests from separate threads released together; return their status codes."""
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []

    def run(method, path, kwargs):
        client = app.test_client()
        barrier.wait()
        statuses.append(getattr(client, method)(path, **kwargs).status_code)

    threads = [threading.Thread(target=run, args=r) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(statuses)


def test_simultaneous_unlocks_have_one_winner(live_app, clock):
    lock, headers = setup_case(live_app, clock)
    url = f"/v1/review/locks/{lock['lock_id']}/unlock"
    body = {"note": "owner verified", "version": lock["version"]}
    statuses = race(live_app, [("post", url, {"json": body, "headers": h}) for h in headers])
    assert statuses == [200, 409]
    history = live_app.test_client().get("/v1/review/accounts/a1/timeline", headers=headers[0]).get_json()
    assert [h["event"] for h in history["locks"][0]["history"]] == ["place", "operator_unlock"]


def test_simultaneous_claims_have_one_winner(live_app, clock):
    lock, headers = setup_case(live_app, clock)
    url = f"/v1/review/locks/{lock['lock_id']}/claim"
    statuses = race(live_app, [("post", url, {"headers": h}) for h in headers])
    assert statuses == [200, 409]


def test_simultaneous_appeal_claims_have_one_winner(live_app, clock):
    lock, headers = setup_case(live_app, clock)
    client = live_app.test_client()
    started = client.post("/v1/appeals", json={"identifier": "a1", "statement": "It was me, honestly."})
    assert started.status_code == 202, started.get_json()
    appeal_id = started.get_json()["appeal_id"]
    url = f"/v1/review/appeals/{appeal_id}/claim"
    statuses = race(live_app, [("post", url, {"headers": h}) for h in headers])
    assert statuses == [200, 409]
    [item] = client.get("/v1/review/appeals", headers=headers[0]).get_json()["items"]
    assert item["claimed_by"] in {"rita", "omar"} and item["claimed_here"] is True


def test_a_lock_and_its_appeal_claimed_at_once_by_two_operators_have_one_winner(live_app, clock):
    """A lock and its open appeal are one case: claims of the two at the same moment are serialised."""
    lock, headers = setup_case(live_app, clock)
    client = live_app.test_client()
    started = client.post("/v1/appeals", json={"identifier": "a1", "statement": "It was me, honestly."})
    assert started.status_code == 202, started.get_json()
    appeal_url = f"/v1/review/appeals/{started.get_json()['appeal_id']}/claim"
    lock_url = f"/v1/review/locks/{lock['lock_id']}/claim"
    for _ in range(5):
        statuses = race(live_app, [("post", lock_url, {"headers": headers[0]}),
                                   ("post", appeal_url, {"headers": headers[1]})])
        assert statuses == [200, 409]
        [item] = client.get("/v1/review/appeals", headers=headers[0]).get_json()["items"]
        holder = item["claimed_by"]
        assert holder in {"rita", "omar"}
        # The winner gives the case back, so the next round starts from an unclaimed case again.
        winner = headers[0] if holder == "rita" else headers[1]
        url = lock_url if holder == "rita" else appeal_url
        assert client.delete(url, headers=winner).status_code in (200, 204)
