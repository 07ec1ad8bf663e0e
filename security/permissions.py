"""Named permissions (``subject:action``) granted to service clients as scopes."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    ACCOUNTS_READ = "accounts:read"
    ACCOUNTS_WRITE = "accounts:write"
    CREDENTIALS_WRITE = "credentials:write"
    LOGINS_CHECK = "logins:check"
    EVENTS_WRITE = "events:write"
    DENYLIST_READ = "denylist:read"
    DENYLIST_WRITE = "denylist:write"


ALL_SCOPES: tuple[str, ...] = tuple(scope.value for scope in Scope)
