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

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.clients.models import ServiceClient
from security.clock import Clock
from security.crypto import constant_time_equals, sha256_hex
from security.entropy import Entropy
from security.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from security.permissions import ALL_SCOPES

KEY_PREFIX = "fg_"
PREFIX_BYTES = 6
SECRET_BYTES = 32
#: What authenticating a key needs of the client whose key starts with ``prefix`` (built once: every API
#: call runs it; columns, not the entity: nothing is changed through it).
BY_PREFIX: Final = select(
    ServiceClient.id, ServiceClient.name, ServiceClient.key_hash, ServiceClient.scopes, ServiceClient.revoked_at,
).where(ServiceClient.key_prefix == bindparam("prefix"))

#: Whether the client ``client_id`` is still active (not revoked, not deleted): the check a request whose key
#: was recognised from :class:`KeyCache` still owes. A column expression, so a request's first statement can
#: carry it instead of a round trip of its own (see ``security.clients.auth``).
CLIENT_ACTIVE: Final = exists().where(
    ServiceClient.id == bindparam("auth_client_id"), ServiceClient.revoked_at.is_(None)).label("client_active")
#: The same check on its own.
CLIENT_ACTIVE_ALONE: Final = select(CLIENT_ACTIVE)
#: Keys remembered per process; only keys that authenticated successfully get in, so unknown keys cannot
#: grow it.
KEY_CACHE_SIZE: Final = 1024
REVOKED_MESSAGE: Final = "The API key is not valid or was revoked."


class ClientRevoked(Unauthenticated):
    """The request's key was recognised, but its client is revoked (found inside the request's transaction)."""


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


class KeyCache:
    """What a valid key stands for (client id, name, scopes), remembered by the SHA-256 of the key.

    Only facts that never change for a key are kept: a client's name, id, scopes and key hash are fixed
    when it is created. Whether it is *revoked* is never taken from here: a request authenticated from the
    cache still checks that in its own transaction (:data:`CLIENT_ACTIVE`), so a revocation takes effect
    at once on every worker and host, as without the cache. The cache saves the lookup's round trip.
    """

    def __init__(self, size: int = KEY_CACHE_SIZE) -> None:
        self._size = size
        self._entries: dict[str, AuthenticatedClient] = {}

    def get(self, key_hash: str) -> AuthenticatedClient | None:
        return self._entries.get(key_hash)

    def put(self, key_hash: str, client: AuthenticatedClient) -> None:
        if key_hash not in self._entries and len(self._entries) >= self._size:
            self._entries.pop(next(iter(self._entries)), None)  # the oldest entry
        self._entries[key_hash] = client

    def forget(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)


def client_still_active(session: Session, client_id: uuid.UUID) -> bool:
    """Whether the client is still active, read in the session's transaction."""
    return bool(session.scalar(CLIENT_ACTIVE_ALONE, {"auth_client_id": client_id}))


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
