"""Alembic environment. Run through kubemate.metadata.migrate.upgrade_to_head, which passes its
connection in ``config.attributes["connection"]``; the ``alembic`` CLI works too given an url."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from kubemate.metadata.database import WRITE_INTENT, make_engine
from kubemate.metadata.models import Base

config = context.config
target_metadata = Base.metadata

# Any fixed number; every process that migrates takes the same PostgreSQL advisory lock.
MIGRATION_LOCK_ID = 0x6B6D_6D69_6772


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # Our SQLite engine emits BEGIN itself, so DDL there is transactional as well: a failed
        # migration leaves no half-built schema on either database.
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until commit: a second migrator waits, then finds the schema at head.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn.execution_options(**{WRITE_INTENT: True}))
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
