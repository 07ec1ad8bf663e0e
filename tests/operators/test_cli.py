from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from security.audit.models import AuditEntry
from security.operators.models import Operator
from security.operators.services import AuditTag
from tests.operators.factories import PASSWORD

STEP = timedelta(seconds=30)


def create(app, name, role, password=PASSWORD):
    return app.test_cli_runner().invoke(
        args=["operators", "create", name, "--role", role, "--password-stdin"], input=password + "\n"
    )


def test_create_prints_otpauth_uri_and_qr_and_seals_the_secret(app, db_session):
    result = create(app, "alice", "reviewer")
    assert result.exit_code == 0, result.output
    assert "operator alice created with role reviewer" in result.output
    uri = next(line for line in result.output.splitlines() if line.startswith("otpauth URI: "))
    secret = next(line for line in result.output.splitlines() if line.startswith("manual entry secret: "))
    secret = secret.split(": ", 1)[1]
    assert uri.startswith("otpauth URI: otpauth://totp/")
    assert f"secret={secret}" in uri
    assert "▀" in result.output or "▄" in result.output  # the terminal QR code
    operator = db_session.scalars(select(Operator).where(Operator.name == "alice")).one()
    assert secret not in operator.totp_secret_sealed
    assert PASSWORD not in operator.password_hash
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == AuditTag.CREATED)).one()
    assert entry.actor == "cli"
    assert entry.data == {"name": "alice", "role": "reviewer"}


def test_create_prompts_for_the_password_twice(app):
    result = app.test_cli_runner().invoke(
        args=["operators", "create", "bob", "--role", "viewer"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    mismatch = app.test_cli_runner().invoke(
        args=["operators", "create", "carl", "--role", "viewer"], input=f"{PASSWORD}\nsomething-else\n"
    )
    assert mismatch.exit_code != 0
    assert "do not match" in mismatch.output


def test_create_applies_the_password_policy_and_refuses_duplicates(app):
    weak = create(app, "alice", "admin", password="password")
    assert weak.exit_code != 0
    assert "operator alice created" not in weak.output
    assert create(app, "alice", "admin").exit_code == 0
    again = create(app, "alice", "viewer")
    assert again.exit_code != 0
    assert "exists already" in again.output


def test_create_refuses_bad_names_and_roles(app):
    assert create(app, "Bad Name", "viewer").exit_code != 0
    assert create(app, "alice", "superuser").exit_code != 0


def test_list_and_disable(app, new_operator):
    new_operator("alice", "admin")
    new_operator("vera", "viewer")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["operators", "disable", "vera"]).exit_code == 0
    listing = runner.invoke(args=["operators", "list"]).output.splitlines()
    assert listing == ["alice\tadmin\tactive", "vera\tviewer\tdisabled"]
    missing = runner.invoke(args=["operators", "disable", "nobody"])
    assert missing.exit_code != 0


def reset(app, target, by, by_code, approver, approver_code):
    return app.test_cli_runner().invoke(args=[
        "operators", "reset-totp", target, "--by", by, "--by-code", by_code,
        "--approved-by", approver, "--approver-code", approver_code,
    ])


def test_reset_totp_needs_two_different_admins_other_than_the_target(app, clock, new_operator):
    ann = new_operator("ann", "admin")
    bob = new_operator("bob", "admin")
    new_operator("target", "reviewer")
    now = clock.now()
    same = reset(app, "target", "ann", ann.code(now), "ann", ann.code(now))
    assert same.exit_code != 0
    assert "differ" in same.output
    own = reset(app, "ann", "ann", ann.code(now), "bob", bob.code(now))
    assert own.exit_code != 0
    assert "own credentials" in own.output


def test_reset_totp_refuses_a_reviewer_as_approver(app, clock, new_operator):
    ann = new_operator("ann", "admin")
    rita = new_operator("rita", "reviewer")
    new_operator("target", "viewer")
    result = reset(app, "target", "ann", ann.code(clock.now()), "rita", rita.code(clock.now()))
    assert result.exit_code != 0
    assert "administrators" in result.output


def test_reset_totp_with_a_wrong_code_is_refused_and_counted(app, clock, new_operator, db_session):
    ann = new_operator("ann", "admin")
    bob = new_operator("bob", "admin")
    new_operator("target", "viewer")
    good = bob.code(clock.now())
    wrong = "000000" if good != "000000" else "111111"
    result = reset(app, "target", "ann", ann.code(clock.now()), "bob", wrong)
    assert result.exit_code != 0
    assert "not accepted" in result.output
    bob_row = db_session.scalars(select(Operator).where(Operator.name == "bob")).one()
    db_session.refresh(bob_row)
    assert bob_row.failed_sign_ins == 1  # the refusal was committed
    refused = db_session.scalars(select(AuditEntry).where(AuditEntry.action == AuditTag.TOTP_REFUSED)).one()
    assert refused.data == {"reason": "a TOTP code was not accepted"}


def test_reset_totp_replaces_the_secret_and_ends_sessions(app, client, clock, new_operator, db_session):
    ann = new_operator("ann", "admin")
    bob = new_operator("bob", "admin")
    target = new_operator("target", "viewer")
    token = client.post("/v1/review/tokens", json={
        "name": "target", "password": PASSWORD, "totp_code": target.code(clock.now())}).get_json()["token"]
    result = reset(app, "target", "ann", ann.code(clock.now()), "bob", bob.code(clock.now()))
    assert result.exit_code == 0, result.output
    new_secret = next(
        line.split(": ", 1)[1] for line in result.output.splitlines() if line.startswith("manual entry secret: ")
    )
    assert new_secret != target.secret
    assert client.get("/v1/review/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    clock.advance(STEP)
    old = client.post("/v1/review/tokens", json={
        "name": "target", "password": PASSWORD, "totp_code": target.code(clock.now())})
    assert old.status_code == 401
    clock.advance(STEP)
    target.secret = new_secret
    fresh = client.post("/v1/review/tokens", json={
        "name": "target", "password": PASSWORD, "totp_code": target.code(clock.now())})
    assert fresh.status_code == 201
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == AuditTag.TOTP_RESET)).one()
    assert entry.actor == f"operator:{ann.id}"
    assert entry.data["approved_by"] == f"operator:{bob.id}"
