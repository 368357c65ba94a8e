"""Runs the Alembic migrations from code: no alembic.ini, works from an installed package."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

from kubemate.logs import get_logger
from kubemate.metadata.database import WRITE_INTENT, make_engine

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic's ``context`` is module-global state, so two migrations may not overlap in one process.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(database_url: str) -> Config:
    """An Alembic Config built in code, pointing at the migrations inside this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config values go through configparser interpolation, where "%" (URL-escaped passwords)
    # is special.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Bring the database to the newest schema. Idempotent, and safe when several processes
    start at once: PostgreSQL serialises them on an advisory lock, SQLite on its write lock."""
    engine = make_engine(database_url)
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            config = alembic_config(database_url)
            # Alembic runs on our connection, so SQLite gets the same PRAGMAs and BEGIN IMMEDIATE.
            config.attributes["connection"] = connection.execution_options(**{WRITE_INTENT: True})
            command.upgrade(config, "head")
            if connection.in_transaction():
                connection.commit()
    finally:
        engine.dispose()
    log.info("metadata.migrated", backend=engine.url.get_backend_name())
