"""``Authorization: Bearer <api key>`` for service endpoints, with scope checks."""

from __future__ import annotations

from flask import g, request

from security.clients.services import AuthenticatedClient, ClientService
from security.errors import Forbidden, Unauthenticated
from security.permissions import Scope
from security.web.deps import deps


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


class ClientScope:
    """Require a valid, unrevoked service-client key holding ``scope``."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def authenticate(self) -> str:
        token = bearer_token()
        if token is None:
            raise Unauthenticated("Send the API key as 'Authorization: Bearer <key>'.")
        d = deps()
        client = ClientService(d.session, clock=d.clock, entropy=d.entropy, audit=d.audit).authenticate(token)
        if client is None:
            raise Unauthenticated("The API key is not valid or was revoked.")
        if self.scope not in client.scopes:
            raise InsufficientScope(f"This operation needs the scope '{self.scope}'.")
        g.client = client
        return f"client:{client.name}"

    def openapi_security(self) -> list[dict[str, list[str]]]:
        return [{"clientKey": [str(self.scope)]}]

    def describe(self) -> str:
        return f"service client with scope {self.scope}"
