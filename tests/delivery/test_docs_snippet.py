"""The verification snippet in docs/webhooks.md works against what Foxguard actually sends."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from security.delivery.events import envelope_body
from security.delivery.signing import WebhookSecret, signed_headers

ROOT = Path(__file__).resolve().parents[2]
# The same snippet is shown in the README and in docs/webhooks.md; both copies must work.
DOCS = (ROOT / "docs" / "webhooks.md", ROOT / "README.md")
AT = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
OLD = WebhookSecret(b"o" * 32)
NEW = WebhookSecret(b"n" * 40)


@pytest.fixture(scope="module", params=DOCS, ids=lambda path: path.name)
def snippet(request: pytest.FixtureRequest) -> dict[str, Any]:
    doc: Path = request.param
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, f"{doc.name} should hold exactly one python snippet"
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], str(doc), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def delivery(secrets: list[WebhookSecret]) -> tuple[bytes, dict[str, str]]:
    msg_id = "msg_1f6a"
    envelope = {"type": "account.locked", "timestamp": AT.isoformat(), "data": {"account_id": "acc_1", "lock_id": "L1"}}
    body = envelope_body(msg_id, envelope)
    return body, signed_headers(secrets, msg_id, body, at=AT)


def test_snippet_accepts_a_genuine_webhook(snippet: dict[str, Any]) -> None:
    body, headers = delivery([NEW, OLD])
    now = AT.timestamp() + 60
    event = snippet["verify_foxguard_webhook"](body, headers, [OLD.serialize()], now=now)
    assert event["type"] == "account.locked"
    assert event["id"] == headers["webhook-id"]
    assert snippet["verify_foxguard_webhook"](body, headers, [NEW.serialize()], now=now) == event


def test_snippet_rejects_tampering_old_timestamps_and_wrong_secrets(snippet: dict[str, Any]) -> None:
    verify, invalid = snippet["verify_foxguard_webhook"], snippet["InvalidWebhook"]
    body, headers = delivery([NEW])
    with pytest.raises(invalid, match="signature"):
        verify(body.replace(b"acc_1", b"acc_2"), headers, [NEW.serialize()], now=AT.timestamp())
    with pytest.raises(invalid, match="tolerance"):
        verify(body, headers, [NEW.serialize()], now=AT.timestamp() + 301)
    with pytest.raises(invalid, match="signature"):
        verify(body, headers, [OLD.serialize()], now=AT.timestamp())
    with pytest.raises(invalid, match="headers"):
        verify(body, {k: v for k, v in headers.items() if k != "webhook-id"}, [NEW.serialize()])
