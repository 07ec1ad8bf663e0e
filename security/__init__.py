"""Foxguard: account-security service for a crypto wallet.

``create_app`` is the application factory; every subsystem registers itself through its ``init_app``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from werkzeug.routing import BaseConverter

from security.clock import Clock, SystemClock
from security.config import Settings, load_settings
from security.credentials.passwords import PasswordHasher, PasswordPolicy
from security.crypto import SecretBox
from security.db import make_engine, make_session_factory, sqlite_file
from security.entropy import Entropy, SystemEntropy
from security.runtime import EXTENSION_KEY, Runtime
from security.types import ACCOUNT_ID_PATTERN

ROOT = Path(__file__).resolve().parent.parent


class AccountIdConverter(BaseConverter):
    """``<account:account_id>``: the wallet's account ids (anything else is a 404 before any view runs)."""

    regex = ACCOUNT_ID_PATTERN.strip("^$")


def _absolute_sqlite_url(url: str) -> str:
    """Relative SQLite paths are taken from the project root, not the working directory."""
    parsed = make_url(url)
    database = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if database:
        path = Path(database)
        if not path.is_absolute():
            return parsed.set(database=str(ROOT / path)).render_as_string(hide_password=False)
    return url


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    entropy: Entropy | None = None,
    session_factory: Callable[[], Session] | None = None,
) -> Flask:
    """Build the application. Tests pass their own clock, entropy and session factory."""
    settings = settings or load_settings()
    if make_url(settings.database.url).get_backend_name() == "sqlite":
        database = settings.database.model_copy(update={"url": _absolute_sqlite_url(settings.database.url)})
        settings = settings.model_copy(update={"database": database})
    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    app.config.update(
        SECRET_KEY=settings.app.secret_key,
        MAX_CONTENT_LENGTH=settings.app.max_body_bytes,
        TESTING=settings.app.env == "testing",
    )
    app.url_map.converters["account"] = AccountIdConverter
    app.url_map.strict_slashes = False
    engine = make_engine(settings)
    pw = settings.passwords
    app.extensions[EXTENSION_KEY] = Runtime(
        settings=settings,
        engine=engine,
        session_factory=session_factory or make_session_factory(engine),
        clock=clock or SystemClock(),
        entropy=entropy or SystemEntropy(),
        secret_box=SecretBox(settings.secrets.encryption_keys),
        password_hasher=PasswordHasher(
            time_cost=pw.time_cost, memory_cost_kib=pw.memory_cost_kib, parallelism=pw.parallelism,
            max_concurrent=pw.hash_slots(),
        ),
        password_policy=PasswordPolicy(
            min_length=pw.min_length, max_length=pw.max_length, min_strength=pw.min_strength
        ),
        extras={},
    )
    if app.config["TESTING"] is False and settings.app.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.app.trusted_proxies, x_proto=settings.app.trusted_proxies
        )

    from security import cli
    from security.accounts import views as accounts_views
    from security.appeals import views as appeals_views
    from security.console import views as console_views
    from security.credentials import views as credentials_views
    from security.delivery import wiring as delivery_wiring
    from security.operators import views as operators_views
    from security.review import views as review_views
    from security.risk import views as risk_views
    from security.web import observability, openapi, problems, transaction

    # after_request hooks run in reverse order: the commit (transaction) runs before the request is
    # logged and counted (observability), so a failed commit is logged with its real status.
    observability.init_app(app)
    transaction.init_app(app)
    problems.init_app(app)
    # Slices: each registers its blueprint(s), CLI commands and settings. Add new slices here.
    for init in (
        accounts_views.init_app, risk_views.init_app, credentials_views.init_app, delivery_wiring.init_app,
        appeals_views.init_app, operators_views.init_app, review_views.init_app, console_views.init_app,
    ):
        init(app)
    app.register_blueprint(openapi.bp)
    cli.init_app(app)

    if settings.database.auto_migrate and session_factory is None:
        from security.migrate import upgrade

        upgrade(engine)
    return app
