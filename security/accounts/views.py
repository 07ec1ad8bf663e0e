"""HTTP: account profiles and passwords (service clients only)."""

from __future__ import annotations

from flask import Blueprint, Flask

from security.accounts.models import Account
from security.accounts.schemas import AccountIn, AccountOut, PasswordIn
from security.accounts.services import AccountService, Profile
from security.clients.auth import ClientScope
from security.permissions import Scope
from security.web.api import operation
from security.web.deps import Deps, deps

bp = Blueprint("accounts", __name__)


def account_service(d: Deps) -> AccountService:
    return AccountService(
        d.session,
        clock=d.clock,
        audit=d.audit,
        outbox=d.outbox,
        hasher=d.passwords,
        policy=d.password_policy,
        identity_hmac_key=d.settings.secrets.identity_hmac_key,
    )


def render_account(account: Account) -> AccountOut:
    return AccountOut(
        account_id=account.id,
        email=account.email,
        phone=account.phone,
        home_country=account.home_country,
        identity_document_on_file=account.identity_document_hmac is not None,
        has_password=account.password_hash is not None,
        status=account.status,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


@operation(
    bp, "/v1/accounts/<account:account_id>", method="PUT", body=AccountIn, response=AccountOut,
    auth=ClientScope(Scope.ACCOUNTS_WRITE), summary="Create or replace an account's security profile",
    errors={409: "E-mail or phone already used by another account"}, tags=["accounts"], also=[201],
)
def put_account(account_id: str, body: AccountIn) -> tuple[AccountOut, int]:
    """Upsert. The identity-document number is stored only as a keyed HMAC and never returned."""
    d = deps()
    account, created = account_service(d).upsert(
        account_id,
        Profile(email=body.email, phone=body.phone, home_country=body.home_country,
                identity_document=body.identity_document),
        actor=d.actor,
    )
    return render_account(account), 201 if created else 200


@operation(
    bp, "/v1/accounts/<account:account_id>", method="GET", response=AccountOut,
    auth=ClientScope(Scope.ACCOUNTS_READ), summary="Read an account's security profile", tags=["accounts"],
)
def get_account(account_id: str) -> AccountOut:
    return render_account(account_service(deps()).get(account_id))


@operation(
    bp, "/v1/accounts/<account:account_id>/password", method="PUT", body=PasswordIn, status=204,
    auth=ClientScope(Scope.CREDENTIALS_WRITE), summary="Set an account's password",
    tags=["accounts"],
)
def put_password(account_id: str, body: PasswordIn) -> None:
    """Applies the password policy (422 `weak_password` lists every reason), hashes with argon2id and
    announces `password.changed`."""
    d = deps()
    account_service(d).set_password(account_id, body.password, actor=d.actor)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
