"""Console deny-list page: everyone reads it, admins (``admin:denylist:manage``) add and remove entries.

The risk slice's ``DenyListService`` does the work (normalisation, audit), as for ``/v1/deny-list``.
"""

from __future__ import annotations

from datetime import timedelta

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from security.console.views import NAV_ITEMS, NavItem, bp
from security.errors import InvalidInput
from security.operators.auth import console_page, current_operator
from security.operators.policy import Permission
from security.operators.services import actor_of
from security.risk.denylist import DenyListService
from security.risk.models import DenyListKind
from security.web.deps import deps

MAX_REASON_CHARS = 500
MAX_EXPIRY_DAYS = 365

NAV_ITEMS.append(NavItem("console.deny_list", "Deny list", Permission.CASES_READ))


def _service() -> DenyListService:
    d = deps()
    return DenyListService(d.session, clock=d.clock, audit=d.audit)


def _kind(raw: str) -> DenyListKind:
    try:
        return DenyListKind(raw)
    except ValueError:
        raise InvalidInput(f"Kind must be one of: {', '.join(DenyListKind)}.") from None


@bp.get("/deny-list")
@console_page(Permission.CASES_READ)
def deny_list() -> str:
    return render_template("console/deny_list.html", entries=_service().list(), kinds=list(DenyListKind),
                           max_days=MAX_EXPIRY_DAYS)


@bp.post("/deny-list")
@console_page(Permission.DENYLIST_MANAGE)
def deny_list_add() -> BaseResponse:
    kind = _kind(request.form.get("kind", ""))
    reason = request.form.get("reason", "").strip()
    if not 1 <= len(reason) <= MAX_REASON_CHARS:
        raise InvalidInput(f"Give a reason of 1 to {MAX_REASON_CHARS} characters.")
    days = request.form.get("expires_in_days", "").strip()
    expires_at = None
    if days:
        if not days.isdigit() or not 1 <= int(days) <= MAX_EXPIRY_DAYS:
            raise InvalidInput(f"Expiry must be a whole number of days between 1 and {MAX_EXPIRY_DAYS}.")
        expires_at = deps().clock.now() + timedelta(days=int(days))
    _service().put(kind, request.form.get("value", ""), reason=reason, actor=actor_of(current_operator()),
                   expires_at=expires_at)
    return redirect(url_for("console.deny_list"), code=303)


@bp.post("/deny-list/remove")
@console_page(Permission.DENYLIST_MANAGE)
def deny_list_remove() -> BaseResponse:
    _service().remove(_kind(request.form.get("kind", "")), request.form.get("value", ""),
                      actor=actor_of(current_operator()))
    return redirect(url_for("console.deny_list"), code=303)
