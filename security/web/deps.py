"""Per-request collaborators for views: one container, built lazily, shared by the request."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g
from sqlalchemy.orm import Session

from security.audit.services import AuditLog
from security.clock import Clock
from security.config import Settings
from security.credentials.passwords import PasswordHasher, PasswordPolicy
from security.crypto import SecretBox
from security.delivery.outbox import Outbox
from security.entropy import Entropy
from security.runtime import Runtime, runtime
from security.web.transaction import request_session


@dataclass
class Deps:
    runtime: Runtime
    session: Session
    clock: Clock
    entropy: Entropy
    settings: Settings
    secret_box: SecretBox
    passwords: PasswordHasher
    password_policy: PasswordPolicy
    audit: AuditLog
    outbox: Outbox
    request_id: str | None

    @property
    def actor(self) -> str:
        """Who is acting in this request, for audit entries (``client:<name>``, ``operator:<id>``, ``user``)."""
        value: str = g.get("actor", "anonymous")
        return value


def webhook_endpoint_names(rt: Runtime) -> tuple[str, ...]:
    """Names of the configured webhook endpoints (one outbox message per endpoint and event)."""
    endpoints = rt.settings.section("webhooks").get("endpoints") or []
    names = tuple(str(e["name"]) for e in endpoints if isinstance(e, dict) and "name" in e)
    return names or ("backend",)


def deps() -> Deps:
    """The request's collaborators."""
    existing: Deps | None = g.get("deps")
    if existing is not None:
        return existing
    rt = runtime()
    session = request_session()
    request_id = g.get("request_id")
    built = Deps(
        runtime=rt,
        session=session,
        clock=rt.clock,
        entropy=rt.entropy,
        settings=rt.settings,
        secret_box=rt.secret_box,
        passwords=rt.password_hasher,
        password_policy=rt.password_policy,
        audit=AuditLog(session, clock=rt.clock, request_id=request_id),
        outbox=Outbox(
            session,
            clock=rt.clock,
            entropy=rt.entropy,
            secret_box=rt.secret_box,
            webhook_endpoints=webhook_endpoint_names(rt),
        ),
        request_id=request_id,
    )
    g.deps = built
    return built
