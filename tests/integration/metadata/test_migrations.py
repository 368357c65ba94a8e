"""The schema's migrations on both databases: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from kubemate.metadata import upgrade_to_head
from kubemate.metadata.database import make_engine
from kubemate.metadata.migrate import alembic_config
from kubemate.metadata.models import Base

pytestmark = pytest.mark.integration

TABLES = {"tenants", "documents", "tasks", "usage", "alembic_version"}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'm.db'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()


def test_migrations_apply_to_an_empty_database_and_are_idempotent(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    upgrade_to_head(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()
        assert version == head
    finally:
        engine.dispose()


def test_migrations_match_the_models(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_concurrent_migrations_from_several_processes_agree(empty_database_url: str) -> None:
    # Services and the worker all migrate at start-up and may start at the same moment. Real
    # processes, as the lock that keeps them apart is the database's, not Python's.
    script = (
        "import sys; from kubemate.metadata import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()
