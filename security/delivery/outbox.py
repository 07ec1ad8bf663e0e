"""The transactional outbox: messages written in the same transaction as the change they announce.

The dispatcher (``security.delivery.dispatcher``) delivers them at least once. Secrets that a message must
carry (one-time codes, reset links) are sealed with the :class:`~security.crypto.SecretBox`, never stored
in the clear, and erased once delivered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from security.clock import Clock
from security.crypto import SecretBox
from security.db import Base
from security.entropy import Entropy
from security.types import JSONDict, Timestamp


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    SMS = "sms"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_messages_due", "status", "next_attempt_at"),
        Index("ix_outbox_messages_ordering", "ordering_key", "id"),
    )

    # Monotonic id: the delivery order within an ordering key.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    # Stable public id, sent as the `webhook-id` header so receivers can deduplicate.
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[Timestamp]
    channel: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str] = mapped_column(String(64))
    # Webhook endpoint name, e-mail address or phone number.
    destination: Mapped[str] = mapped_column(String(320))
    payload: Mapped[JSONDict]
    # SecretBox ciphertext of secret template values; cleared after delivery.
    sealed: Mapped[str | None] = mapped_column(Text)
    ordering_key: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Timestamp]
    lease_until: Mapped[Timestamp | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[Timestamp | None]


class Outbox:
    """Queue webhooks, e-mails and text messages inside the caller's transaction."""

    def __init__(
        self,
        session: Session,
        *,
        clock: Clock,
        entropy: Entropy,
        secret_box: SecretBox,
        webhook_endpoints: Sequence[str] = ("backend",),
    ) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._box = secret_box
        self._endpoints = tuple(webhook_endpoints)

    def _add(
        self,
        channel: Channel,
        event_type: str,
        destination: str,
        payload: Mapping[str, Any],
        *,
        secret: Mapping[str, str] | None,
        ordering_key: str | None,
    ) -> OutboxMessage:
        now = self._clock.now()
        message = OutboxMessage(
            message_id="msg_" + self._entropy.token_bytes(16).hex(),
            created_at=now,
            channel=channel,
            event_type=event_type,
            destination=destination,
            payload=dict(payload),
            sealed=self._box.encrypt(json.dumps(dict(secret)).encode()) if secret else None,
            ordering_key=ordering_key,
            status=OutboxStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        self._session.add(message)
        return message

    def webhook(
        self, event_type: str | StrEnum, data: Mapping[str, Any], *, ordering_key: str | None = None
    ) -> list[OutboxMessage]:
        """Announce ``event_type`` to every configured webhook endpoint (one message each).

        The payload follows the Standard Webhooks shape: ``{"type", "timestamp", "data"}``.
        """
        body = {"type": str(event_type), "timestamp": self._clock.now().isoformat(), "data": dict(data)}
        return [
            self._add(Channel.WEBHOOK, str(event_type), name, body, secret=None, ordering_key=ordering_key)
            for name in self._endpoints
        ]

    def message(
        self,
        channel: Channel,
        to: str,
        template: str,
        context: Mapping[str, Any],
        *,
        secret: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> OutboxMessage:
        """Queue a message to a person (e-mail or text) rendered from ``template``; ``secret`` values are
        sealed until delivery."""
        return self._add(channel, template, to, {"template": template, "context": dict(context)},
                         secret=secret, ordering_key=ordering_key)

    def email(self, to: str, template: str, context: Mapping[str, Any], *,
              secret: Mapping[str, str] | None = None, ordering_key: str | None = None) -> OutboxMessage:
        """Queue an e-mail (see :meth:`message`)."""
        return self.message(Channel.EMAIL, to, template, context, secret=secret, ordering_key=ordering_key)

    def sms(self, to: str, template: str, context: Mapping[str, Any], *,
            secret: Mapping[str, str] | None = None, ordering_key: str | None = None) -> OutboxMessage:
        """Queue a text message (see :meth:`message`)."""
        return self.message(Channel.SMS, to, template, context, secret=secret, ordering_key=ordering_key)

    def notify(
        self,
        *,
        email: str | None,
        phone: str | None,
        template: str,
        context: Mapping[str, Any],
        secret: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
        prefer_sms: bool = False,
    ) -> Channel | None:
        """Send ``template`` to a person's registered contact: e-mail, or a text message when asked
        for (``prefer_sms``) or when there is no e-mail. Returns the channel used, None if there is none."""
        if email and not (prefer_sms and phone):
            channel, to = Channel.EMAIL, email
        elif phone:
            channel, to = Channel.SMS, phone
        else:
            return None
        self.message(channel, to, template, context, secret=secret, ordering_key=ordering_key)
        return channel

    def unseal(self, message: OutboxMessage) -> dict[str, str]:
        """The secret values of ``message`` (for the dispatcher and tests)."""
        if not message.sealed:
            return {}
        value: dict[str, str] = json.loads(self._box.decrypt(message.sealed))
        return value
