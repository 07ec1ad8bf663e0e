"""Alembic environment: the URL comes from Foxguard's settings (FOXGUARD_DATABASE_URL or config/*.toml)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from security.db import exists_on
from security.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_with(connection) -> None:  # type: ignore[no-untyped-def]
    dialect = connection.dialect.name

    def include_object(item, _name, _type, reflected, _compare_to) -> bool:  # type: ignore[no-untyped-def]
        # A model item declared for another backend only (security.db.only_on) is not compared here.
        return bool(reflected) or exists_on(item, dialect)

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    from security import _absolute_sqlite_url
    from security.config import load_settings
    from security.db import make_engine

    settings = load_settings()
    database = settings.database.model_copy(update={"url": _absolute_sqlite_url(settings.database.url)})
    engine = make_engine(settings.model_copy(update={"database": database}))
    with engine.connect() as conn:
        run_with(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
