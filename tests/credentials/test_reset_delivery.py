"""End to end: the reset token leaves through the outbox dispatcher, in a link, and never in a log."""

from __future__ import annotations

import re

from security.delivery.senders import LogMailer, MemoryMailer
from security.delivery.wiring import build_dispatcher
from security.runtime import runtime
from tests.credentials.conftest import NEW_PASSWORD, capture_logs, create_account
from tests.credentials.test_races import live_api

LINK = re.compile(r"/reset-password#token=([A-Za-z0-9_-]{43})")


def test_reset_mail_carries_a_working_link_and_the_log_sink_hides_it(live_app, clock):
    api = live_api(live_app, clock)
    create_account(api)
    client = live_app.test_client()
    with capture_logs() as logs:
        assert client.post("/v1/password-resets", json={"identifier": "ana@example.com"}).status_code == 202

        mailer = MemoryMailer()
        assert build_dispatcher(runtime(live_app), mailer=mailer).run_once().delivered >= 1
        [mail] = [m for m in mailer.outbox if m.kind == "password_reset"]
        assert mail.to == "Ana@Example.com"
        match = LINK.search(mail.text)
        assert match is not None, mail.text
        token = match.group(1)
        assert token in mail.sensitive
        assert "30 minutes" in mail.text

        # The default sink logs the same mail, with the token redacted.
        LogMailer().send(mail)
        response = client.post("/v1/password-resets/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        assert response.status_code == 204
    logged = logs.text()
    assert "e-mail (log sink) kind=password_reset" in logged
    assert token not in logged
