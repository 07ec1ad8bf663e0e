"""``Authorization: Bearer <api key>`` for service endpoints, with scope checks.

A key that authenticated once is remembered per process (:class:`~security.clients.services.KeyCache`:
its client's id, name and scopes, which never change). Whether the client is still active is checked in
every request all the same, in the request's transaction:

- by default at once, in :meth:`ClientScope.authenticate` (one small query, as without the cache);
- for the hot operations (``ClientScope(..., confirm_in_transaction=True)``) the check is *owed*: the use
  case carries it in its first statement (the event and login-check ingestion put it in the account's row
  lock, see ``security.risk.services``) and reports it done with :func:`client_confirmed`. Whatever is
  still owed when the view returns or raises a client error is checked then (:func:`settle_owed_check`,
  called by ``security.web.api.operation``), so a revoked key gets its 401 before any other answer
  and nothing it did is committed.
"""

from __future__ import annotations

import uuid
from typing import Final

from flask import Flask, g, request

from security.clients.services import (
    REVOKED_MESSAGE,
    AuthenticatedClient,
    ClientRevoked,
    ClientService,
    KeyCache,
    client_still_active,
)
from security.crypto import sha256_hex
from security.errors import Forbidden, Unauthenticated
from security.permissions import Scope
from security.runtime import runtime
from security.web.api import OWED_AUTH_CHECK
from security.web.deps import deps

KEY_CACHE: Final = "clients.key_cache"
#: ``g`` attribute: (client id, key hash) whose activity is still to be checked.
OWED: Final = "client_check_owed"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    title = "The API key lacks the scope this operation needs"


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def current_client() -> AuthenticatedClient:
    """The authenticated client of this request (only inside a client-authenticated operation)."""
    client: AuthenticatedClient = g.client
    return client


def key_cache(app: Flask | None = None) -> KeyCache:
    """The key cache of ``app`` (default: the current app; per process)."""
    extras = runtime(app).extras
    cache: KeyCache | None = extras.get(KEY_CACHE)
    if cache is None:
        cache = extras.setdefault(KEY_CACHE, KeyCache())
    return cache


def owed_client_id() -> uuid.UUID | None:
    """The client whose activity this request still has to check (None: checked already)."""
    owed: tuple[uuid.UUID, str] | None = g.get(OWED)
    return owed[0] if owed is not None else None


def client_confirmed(*, active: bool) -> None:
    """The use case checked the owed client in its transaction; a revoked one ends the request with 401."""
    owed: tuple[uuid.UUID, str] | None = g.pop(OWED, None)
    g.pop(OWED_AUTH_CHECK, None)
    if owed is not None and not active:
        key_cache().forget(owed[1])
        raise ClientRevoked(REVOKED_MESSAGE)


def settle_owed_check() -> None:
    """Check the owed client now (its own query), unless the use case did it already."""
    client_id = owed_client_id()
    if client_id is None:
        return
    client_confirmed(active=client_still_active(deps().session, client_id))


class ClientScope:
    """Require a valid, unrevoked service-client key holding ``scope``.

    ``confirm_in_transaction``: a key known from the cache is checked for revocation inside the use case's
    first statement instead of by a query of its own (see the module docstring).
    """

    def __init__(self, scope: Scope, *, confirm_in_transaction: bool = False) -> None:
        self.scope = scope
        self.confirm_in_transaction = confirm_in_transaction

    def authenticate(self) -> str:
        token = bearer_token()
        if token is None:
            raise Unauthenticated("Send the API key as 'Authorization: Bearer <key>'.")
        key_hash = sha256_hex(token)
        cache = key_cache()
        client = cache.get(key_hash)
        if client is None:
            d = deps()
            client = ClientService(d.session, clock=d.clock, entropy=d.entropy, audit=d.audit).authenticate(token)
            if client is None:
                raise Unauthenticated(REVOKED_MESSAGE)
            cache.put(key_hash, client)
        else:
            g.setdefault(OWED, (client.id, key_hash))
            g.setdefault(OWED_AUTH_CHECK, settle_owed_check)
            if not self.confirm_in_transaction:
                settle_owed_check()
        if self.scope not in client.scopes:
            settle_owed_check()  # a revoked key hears 401, not which scopes it lacks
            raise InsufficientScope(f"This operation needs the scope '{self.scope}'.")
        g.client = client
        return f"client:{client.name}"

    def openapi_security(self) -> list[dict[str, list[str]]]:
        return [{"clientKey": [str(self.scope)]}]

    def describe(self) -> str:
        return f"service client with scope {self.scope}"
