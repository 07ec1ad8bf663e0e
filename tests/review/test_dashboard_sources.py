from __future__ import annotations

from datetime import timedelta

from security.review.dashboard import blocks_per_day, locks_per_day, queue_age, rule_hits


def test_charts_follow_locks_and_assessments(cases, clock, db_session):
    cases.risk_lock("acc-1")
    clock.advance(days=2)
    cases.risk_lock("acc-2")
    clock.advance(hours=3)
    now = clock.now()
    locks = dict(locks_per_day(db_session, now).points)
    assert locks[(now - timedelta(days=2)).date().isoformat()] == 1
    assert locks[now.date().isoformat()] == 1
    assert blocks_per_day(db_session, now).total == 2
    assert dict(queue_age(db_session, now).points) == {"< 1 h": 0, "1-6 h": 1, "6-24 h": 0, "1-3 d": 1,
                                                       "3-7 d": 0, "> 7 d": 0}
    hits = dict(rule_hits(db_session, now).points)
    assert hits["tx.destination_deny_listed"] == 2
