"""POST /v1/events:batch: per-item results, invalid items rejected alone, valid ones stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from security.audit.models import AuditEntry
from security.risk.models import RiskEvent


def tx(event_id, account_id="acc-1", amount="10.00", **extra):
    return {"type": "transaction", "event_id": event_id, "account_id": account_id, "amount": amount,
            "currency": "EUR", "destination": {"address": "0xfriend", "country": "DE"},
            "occurred_at": "2026-03-02T08:00:00+00:00", **extra}


def test_batch_with_invalid_items(flows, api, db_session):
    flows.account()
    flows.transaction(event_id="dup", amount="5.00")
    events = [
        tx("b-1"),
        tx("b-2", amount=12.5),  # float amount: invalid
        {"type": "nonsense", "event_id": "b-3"},
        {"event_id": "b-4"},  # no type
        tx("b-5", account_id="nobody"),  # unknown account
        {"type": "account_change", "event_id": "b-6", "account_id": "acc-1", "change": "email",
         "occurred_at": "2026-03-02T08:30:00+00:00"},
        tx("dup", amount="6.00"),  # event_id reused with another body
        {"type": "login", "event_id": "b-8", "account_id": "acc-1", "outcome": "success",
         "occurred_at": "2026-03-02T08:45:00+00:00", "context": {"ip": "84.150.20.10"}},
        tx("b-1"),  # replay inside the batch: the stored answer
    ]
    response = api.post("/v1/events:batch", json={"events": events})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (4, 5)
    results = body["results"]
    assert [r["ok"] for r in results] == [True, False, False, False, False, True, False, True, True]
    assert results[1]["error"]["status"] == 422
    assert results[1]["error"]["errors"][0]["field"] == "amount"
    assert results[1]["error"]["errors"][0]["location"] == "events.1"
    assert results[2]["error"]["errors"][0]["field"] == "type"
    assert results[3]["event_id"] == "b-4"
    assert results[4]["error"]["status"] == 404
    assert results[6]["error"]["status"] == 409
    assert results[0]["result"]["decision"] == "allow"
    assert results[8]["result"] == results[0]["result"]
    assert results[5]["result"]["event_id"] == "b-6"
    stored = set(db_session.scalars(select(RiskEvent.event_id)))
    assert stored == {"dup", "b-1", "b-6", "b-8"}


def test_failed_item_leaves_no_trace(flows, api, db_session):
    flows.account()
    before = db_session.scalar(select(func.count()).select_from(AuditEntry))
    body = api.post("/v1/events:batch", json={"events": [tx("x-1", account_id="nobody")]}).get_json()
    assert body["accepted"] == 0
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == 0
    assert db_session.scalar(select(func.count()).select_from(AuditEntry)) == before


def test_batch_limits(api):
    assert api.post("/v1/events:batch", json={"events": []}).status_code == 422
    too_many = [tx(f"e-{n}") for n in range(501)]
    response = api.post("/v1/events:batch", json={"events": too_many})
    assert response.status_code == 422
    assert api.post("/v1/events:batch", json={"events": "nope"}).status_code == 422


def test_batch_of_exactly_500_is_processed(api):
    """Cheap variant: 500 items reach processing (each fails alone on an unknown account)."""
    body = api.post("/v1/events:batch", json={"events": [tx(f"e-{n}", account_id="nobody") for n in range(500)]})
    assert body.status_code == 200
    assert body.get_json()["rejected"] == 500
    assert {r["error"]["status"] for r in body.get_json()["results"]} == {404}


@pytest.mark.slow
def test_batch_of_500_is_accepted(flows, api, db_session):
    flows.account()
    events = [tx(f"e-{n}", amount="1.00") for n in range(500)]
    body = api.post("/v1/events:batch", json={"events": events}).get_json()
    assert body["accepted"] == 500
    assert db_session.scalar(select(func.count()).select_from(RiskEvent)) == 500
