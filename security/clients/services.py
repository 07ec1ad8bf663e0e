"""Creating, revoking and authenticating service clients.

API keys carry 256 bits of randomness, so a fast SHA-256 hash is enough to store them (a slow password
hash protects low-entropy secrets; it would only slow every API call here). Keys look like
``fg_<prefix>_<secret>``: the prefix finds the row, the hash of the whole key is compared in constant time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.clients.models import ServiceClient
from security.clock import Clock
from security.crypto import constant_time_equals, sha256_hex
from security.entropy import Entropy
from security.errors import Conflict, InvalidInput, NotFound
from security.permissions import ALL_SCOPES

KEY_PREFIX = "fg_"
PREFIX_BYTES = 6
SECRET_BYTES = 32
#: What authenticating a key needs of the client whose key starts with ``prefix`` (built once: every API
#: call runs it; columns, not the entity: nothing is changed through it).
BY_PREFIX: Final = select(
    ServiceClient.id, ServiceClient.name, ServiceClient.key_hash, ServiceClient.scopes, ServiceClient.revoked_at,
).where(ServiceClient.key_prefix == bindparam("prefix"))


class AuditTag:
    CLIENT_CREATED = "client:key:created"
    CLIENT_REVOKED = "client:key:revoked"


@dataclass(frozen=True)
class AuthenticatedClient:
    """The active client a request's key belongs to."""

    id: uuid.UUID
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class IssuedKey:
    client: ServiceClient
    api_key: str


def parse_key(api_key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not api_key.startswith(KEY_PREFIX):
        return None
    parts = api_key[len(KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != PREFIX_BYTES * 2 or not parts[1]:
        return None
    return parts[0]


class ClientService:
    def __init__(self, session: Session, *, clock: Clock, entropy: Entropy, audit: AuditLog) -> None:
        self._session = session
        self._clock = clock
        self._entropy = entropy
        self._audit = audit

    def create(self, name: str, scopes: Iterable[str], *, actor: str) -> IssuedKey:
        """Register a client and return its key (shown once; only its hash is kept)."""
        scopes = sorted(set(scopes))
        unknown = [s for s in scopes if s not in ALL_SCOPES]
        if unknown:
            raise InvalidInput(f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(ALL_SCOPES)}")
        if not scopes:
            raise InvalidInput("Give at least one scope.")
        if self._session.scalar(select(ServiceClient.id).where(ServiceClient.name == name)) is not None:
            raise Conflict(f"A client named {name!r} exists already.")
        prefix = self._entropy.token_bytes(PREFIX_BYTES).hex()
        api_key = f"{KEY_PREFIX}{prefix}_{self._entropy.token_urlsafe(SECRET_BYTES)}"
        client = ServiceClient(
            name=name, key_prefix=prefix, key_hash=sha256_hex(api_key), scopes=scopes, created_at=self._clock.now()
        )
        self._session.add(client)
        self._session.flush()
        self._audit.record(
            AuditTag.CLIENT_CREATED, actor=actor, subject_type="client", subject_id=str(client.id),
            data={"name": name, "scopes": scopes},
        )
        return IssuedKey(client=client, api_key=api_key)

    def revoke(self, name: str, *, actor: str) -> ServiceClient:
        client = self._session.scalar(select(ServiceClient).where(ServiceClient.name == name))
        if client is None:
            raise NotFound(f"No client named {name!r}.")
        if client.revoked_at is None:
            client.revoked_at = self._clock.now()
            self._audit.record(
                AuditTag.CLIENT_REVOKED, actor=actor, subject_type="client", subject_id=str(client.id),
                data={"name": name},
            )
        return client

    def list(self) -> list[ServiceClient]:
        return list(self._session.scalars(select(ServiceClient).order_by(ServiceClient.name)))

    def authenticate(self, api_key: str) -> AuthenticatedClient | None:
        """The active client owning ``api_key``, or None (unknown, malformed or revoked)."""
        prefix = parse_key(api_key)
        if prefix is None:
            return None
        client = self._session.execute(BY_PREFIX, {"prefix": prefix}).first()
        if client is None or client.revoked_at is not None:
            return None
        if not constant_time_equals(client.key_hash, sha256_hex(api_key)):
            return None
        return AuthenticatedClient(client.id, client.name, frozenset(client.scopes))
