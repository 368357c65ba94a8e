"""The metadata database's one engine and the transactions every repository runs in.

Nothing outside ``kubemate.metadata`` touches the engine: a caller asks a repository, and a
repository opens its transaction here, so the SQLite locking, the error mapping and the pool
are the same for every statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kubemate.errors import BackendUnavailable, ServiceError
from kubemate.logs import get_logger
from kubemate.settings import DatabaseConfig

log = get_logger(__name__)

# Several processes (API services and a worker) share one SQLite file: a writer waits this long
# for another's lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# Connection execution option: this transaction will write. On SQLite it then starts with
# BEGIN IMMEDIATE, taking the write lock up front; a deferred BEGIN that reads and later writes
# fails with SQLITE_BUSY, without waiting, when another process wrote in between.
WRITE_INTENT = "kubemate_write_intent"

# INSERT ... ON CONFLICT has the same spelling on both, but lives in dialect modules.
INSERT_OR_IGNORE: Mapping[str, Callable[..., Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Hand BEGIN to SQLAlchemy (see _sqlite_on_begin): the sqlite3 module's own legacy handling
    # skips BEGIN before SELECTs and DDL, which breaks repeatable reads and transactional DDL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers do not block the writer nor it them, which several processes need.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default; ON DELETE CASCADE needs it
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE_INTENT, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def make_engine(database_url: str, *, echo: bool = False) -> Engine:
    """An engine for PostgreSQL or SQLite with the settings this project relies on."""
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # the driver we ship, not psycopg2
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    # No pre-ping: a connection to a file cannot go stale the way a server's can, and the
    # ping was a statement more in every transaction (the worker runs several per document).
    engine = create_engine(url, echo=echo)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


@contextmanager
def database_errors() -> Iterator[None]:
    """Database failures as our errors: unreachable or locked is :class:`BackendUnavailable`,
    anything else a :class:`ServiceError`. An IntegrityError passes through unchanged, for the
    repositories that expect one (a race they turn into an answer)."""
    try:
        yield
    except IntegrityError:
        raise
    except (OperationalError, InterfaceError) as exc:
        log.warning("metadata.db_unavailable", error=type(exc.orig).__name__)
        raise BackendUnavailable("metadata database is unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise BackendUnavailable("metadata database connection was lost") from exc
        raise ServiceError("metadata database error") from exc


class Database:
    """The engine and its transactions. Every method raises :class:`BackendUnavailable` when the
    database cannot be reached or stays locked."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> Database:
        return cls(make_engine(config.url, echo=config.echo))

    @property
    def engine(self) -> Engine:
        """For tests of the database itself; callers outside ``kubemate.metadata`` never use
        it (tests/unit/test_metadata_boundary.py)."""
        return self._engine

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Session]:
        """An ORM session in one transaction, committed when the block ends. ``write``: the
        transaction will write, so on SQLite it takes the write lock up front."""
        with database_errors(), self._sessions.begin() as session:
            if write:
                session.connection(execution_options={WRITE_INTENT: True})
            yield session

    @contextmanager
    def connection(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction on a plain connection, for SQLAlchemy Core statements: the worker's
        per-document writes skip the ORM's identity map and unit of work, most of their CPU."""
        with database_errors(), self._engine.connect() as connection:
            if write:
                connection.execution_options(**{WRITE_INTENT: True})
            with connection.begin():
                yield connection

    def ping(self) -> None:
        """One round trip, for readiness and the worker's backend probes."""
        with database_errors(), self._engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self._engine.dispose()


class Repository:
    """The base of each aggregate's repository: its methods open their transactions on the one
    :class:`Database` of the process."""

    def __init__(self, database: Database) -> None:
        self._db = database
