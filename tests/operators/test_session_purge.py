"""Dead operator sessions and API tokens are purged: by the CLI for everyone, at sign-in for the operator."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from security.audit.models import AuditEntry
from security.operators.models import OperatorSession, SessionKind
from security.operators.services import AuditTag
from tests.operators.factories import make_operator, operator_service

STEP = timedelta(seconds=30)


def rows(db_session) -> dict[str, OperatorSession]:
    db_session.expire_all()
    return {str(r.id): r for r in db_session.scalars(select(OperatorSession))}


def issue(app, db_session, clock, op_name: str, kind: SessionKind) -> tuple[str, str]:
    """Start a session or token for ``op_name``; return its row id and raw token."""
    service = operator_service(app, db_session, clock)
    issued = service.start_session(service.get(op_name), kind)
    db_session.commit()
    return str(issued.session.id), issued.token


def purge(app) -> str:
    result = app.test_cli_runner().invoke(args=["operators", "purge-sessions"])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_purges_expired_idle_and_revoked_rows_and_keeps_live_ones(app, db_session, clock):
    """Defaults: console idle 15 min / absolute 8 h; API tokens 60 min."""
    for name in ("alice", "bob"):
        make_operator(app, db_session, clock, name, "reviewer")
    token_old, _ = issue(app, db_session, clock, "alice", SessionKind.API)
    idle_console, _ = issue(app, db_session, clock, "bob", SessionKind.CONSOLE)
    revoked, revoked_token = issue(app, db_session, clock, "bob", SessionKind.API)
    operator_service(app, db_session, clock).end_session(revoked_token)
    db_session.commit()
    clock.advance(minutes=50)
    token_live, _ = issue(app, db_session, clock, "alice", SessionKind.API)
    console_live, console_token = issue(app, db_session, clock, "alice", SessionKind.CONSOLE)
    clock.advance(minutes=10)  # token_old is 60 min old: expired; bob's console idle for 60 min
    assert operator_service(app, db_session, clock).resolve(console_token, SessionKind.CONSOLE) is not None
    db_session.commit()
    assert set(rows(db_session)) == {token_old, idle_console, revoked, token_live, console_live}

    assert "purged 3 expired or revoked operator session(s) and token(s)" in purge(app)
    assert set(rows(db_session)) == {token_live, console_live}
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == AuditTag.SESSIONS_PURGED)).one()
    assert (entry.actor, entry.data) == ("cli", {"purged": 3})
    assert "purged 0 " in purge(app)

    # A console session also dies at its absolute timeout, even when used all the time.
    for _ in range(8 * 4):
        clock.advance(minutes=14)
        operator_service(app, db_session, clock).resolve(console_token, SessionKind.CONSOLE)
        db_session.commit()
    clock.advance(hours=1)
    assert "purged 2 " in purge(app)
    assert rows(db_session) == {}


def test_sign_in_purges_the_operators_own_dead_rows_only(app, client, db_session, clock):
    alice = make_operator(app, db_session, clock, "alice", "reviewer")
    make_operator(app, db_session, clock, "bob", "reviewer")
    alice_old, _ = issue(app, db_session, clock, "alice", SessionKind.API)
    bob_old, _ = issue(app, db_session, clock, "bob", SessionKind.API)
    clock.advance(hours=2)  # both tokens expired
    response = client.post("/v1/review/tokens", json={
        "name": alice.name, "password": alice.password, "totp_code": alice.code(clock.now())})
    assert response.status_code == 201, response.get_json()
    left = rows(db_session)
    assert alice_old not in left
    assert bob_old in left  # someone else's rows wait for the CLI sweep
    assert len(left) == 2


def test_a_failed_sign_in_purges_nothing(app, client, db_session, clock):
    alice = make_operator(app, db_session, clock, "alice", "reviewer")
    old, _ = issue(app, db_session, clock, "alice", SessionKind.API)
    clock.advance(hours=2)
    response = client.post("/v1/review/tokens", json={
        "name": alice.name, "password": "not-the-password", "totp_code": alice.code(clock.now())})
    assert response.status_code == 401
    assert set(rows(db_session)) == {old}
