"""A consistent copy of the whole metadata database, and loading one back.

* PostgreSQL: ``pg_dump --format=custom``, which reads every table in one REPEATABLE READ
  snapshot, so a dump taken while workers write is a state the database really was in; loaded
  with ``pg_restore --clean --if-exists --single-transaction`` (all or nothing). The client
  tools must be on PATH (the Debian ``postgresql-client`` package; the chart's CronJob uses the
  ``postgres`` image); the password goes through the environment, never the command line.
* SQLite: the online backup API (``sqlite3.Connection.backup``), which copies page by page and
  restarts when a writer changes a page it copied, so the copy is one committed state too, taken
  without stopping the services. Loading writes the copy back the same way.

This is the one place outside the repositories that reads the database as a whole, so it lives
in ``kubemate.metadata``: callers pass the :class:`DatabaseConfig`, never an engine.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL, make_url

from kubemate.errors import BackendUnavailable, ServiceError
from kubemate.logs import get_logger
from kubemate.settings import DatabaseConfig

log = get_logger(__name__)

Dialect = Literal["postgresql", "sqlite"]
# Pages per step of SQLite's online backup: small steps let writers in between.
SQLITE_BACKUP_PAGES = 1024
PG_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class DatabaseDump:
    dialect: Dialect
    path: Path


def dialect_of(config: DatabaseConfig) -> Dialect:
    backend = make_url(config.url).get_backend_name()
    if backend == "postgresql":
        return "postgresql"
    if backend == "sqlite":
        return "sqlite"
    raise ServiceError(f"no dump for database backend {backend!r}")


def dump_database(config: DatabaseConfig, directory: Path) -> DatabaseDump:
    """Write a consistent copy of the database into ``directory`` (``database.pgdump`` or
    ``database.sqlite``). Raises :class:`BackendUnavailable` when the database cannot be read,
    :class:`ServiceError` when the PostgreSQL client tools are missing."""
    url = make_url(config.url)
    dialect = dialect_of(config)
    if dialect == "postgresql":
        path = directory / "database.pgdump"
        _run_pg(
            "pg_dump",
            ["--format=custom", "--no-owner", "--no-privileges", "--file", str(path)],
            url,
        )
    else:
        path = directory / "database.sqlite"
        with _sqlite(url) as source, sqlite3.connect(path) as target:
            source.backup(target, pages=SQLITE_BACKUP_PAGES)
        target.close()
    log.info("metadata.dumped", dialect=dialect, bytes=path.stat().st_size)
    return DatabaseDump(dialect, path)


def load_database(config: DatabaseConfig, dump: DatabaseDump) -> None:
    """Replace the database's contents with ``dump``'s. The services must be stopped: a load
    under running writers would interleave with them. Raises :class:`ServiceError` when the
    dump is of another kind of database than ``config`` names."""
    url = make_url(config.url)
    dialect = dialect_of(config)
    if dialect != dump.dialect:
        raise ServiceError(f"a {dump.dialect} dump cannot be loaded into {dialect}")
    if dialect == "postgresql":
        _run_pg(
            "pg_restore",
            [
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                "--dbname",
                url.database or "",
                str(dump.path),
            ],
            url,
        )
    else:
        with sqlite3.connect(dump.path) as source, _sqlite(url) as target:
            source.backup(target, pages=SQLITE_BACKUP_PAGES)
        source.close()
    log.info("metadata.loaded", dialect=dialect)


class _sqlite:
    """A plain sqlite3 connection to the configured file, closed on exit (sqlite3's own
    context manager only commits)."""

    def __init__(self, url: URL) -> None:
        database = url.database
        if not database or database == ":memory:":
            raise ServiceError("an in-memory SQLite database has nothing to back up")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._path = Path(database).expanduser()

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._connection = sqlite3.connect(self._path, timeout=15.0)
        except sqlite3.Error as exc:
            raise BackendUnavailable("metadata database is unavailable") from exc
        return self._connection

    def __exit__(self, *exc: object) -> None:
        self._connection.close()


def _pg_env(url: URL) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in (
        ("PGHOST", url.host),
        ("PGPORT", str(url.port) if url.port else None),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value:
            env[name] = str(value)
    return env


def _run_pg(tool: str, args: list[str], url: URL) -> None:
    executable = shutil.which(tool)
    if executable is None:
        raise ServiceError(f"{tool} is not installed (Debian: postgresql-client)")
    try:
        result = subprocess.run(
            [executable, *args],
            env=_pg_env(url),
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BackendUnavailable(f"{tool} did not finish") from exc
    if result.returncode != 0:
        # stderr names tables and the server, never the password (it is in the environment).
        log.warning("metadata.pg_tool_failed", tool=tool, stderr=result.stderr[-2000:])
        raise BackendUnavailable(f"{tool} failed with exit code {result.returncode}")
