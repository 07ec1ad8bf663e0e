"""What this slice queues matches the delivery slice's contract: documented webhooks, renderable messages."""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from security.clock import FrozenClock
from security.config import Settings
from security.credentials import totp
from security.crypto import SecretBox
from security.delivery.events import schema_problems
from security.delivery.messages import prepare_context, render
from security.locks.states import LockKind
from tests.appeals.conftest import (
    DOCUMENT,
    NEW_PASSWORD,
    PASSWORD,
    Owner,
    decide,
    last_code,
    messages,
    place_lock,
    submit,
)


def test_webhooks_are_documented_and_messages_render(
    client: FlaskClient, db_session: Session, settings: Settings, clock: FrozenClock, owner: Owner, other: Owner,
    app: Flask,
) -> None:
    place_lock(db_session, clock, owner.account_id, LockKind.USER_REPORTED)
    appeal = submit(client, owner.email)
    appeal.verify(method="contact_code", code=last_code(db_session, settings, owner.email))
    appeal.verify(method="identity_document", document=DOCUMENT)
    decide(app, appeal.appeal_id, "op-1", True)
    decide(app, appeal.appeal_id, "op-2", True, reason="Identity confirmed.")
    appeal.post("/password", {"new_password": NEW_PASSWORD})
    secret = appeal.post("/totp").get_json()["secret"]
    assert appeal.post("/totp/confirm", {"code": totp.code_at(secret, clock.now())}).status_code == 200
    client.post("/v1/freeze/codes", json={"identifier": other.phone})
    assert client.post("/v1/freeze", json={"identifier": other.email, "password": PASSWORD}).status_code == 200

    box = SecretBox(settings.secrets.encryption_keys)
    webhook_types = set()
    templates = set()
    for message in messages(db_session):
        if message.channel == "webhook":
            webhook_types.add(message.event_type)
            assert schema_problems(message.event_type, message.payload["data"]) == [], message.event_type
            continue
        secrets = json.loads(box.decrypt(message.sealed)) if message.sealed else {}
        context = prepare_context(message.payload["context"], secrets, base_url="https://wallet.example")
        rendered = render(message.payload["template"], message.channel, context)
        templates.add((message.payload["template"], message.channel))
        if "code" in secrets:
            assert secrets["code"] in rendered.text
    assert {"account.locked", "appeal.decided", "account.unlocked", "password.changed", "mfa.enabled"} <= webhook_types
    assert {("contact_code", "email"), ("contact_code", "sms"), ("appeal_decision", "email")} <= templates
