"""Engine and session factory: SQLite by default, PostgreSQL (psycopg 3) in production."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import ARRAY, Engine, String, any_, bindparam, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 0x48414E44  # "HAND": the advisory lock replicas take to migrate one at a time


def normalize_url(url: str) -> str:
    """Accept the `postgres://` and `postgresql://` forms hosting platforms hand out."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def among(session: Session, column: Any, values: list[str]) -> Any:
    """`column IN values`. On PostgreSQL `column = ANY(array)`: one parameter however many values,
    so a statement about 100 agents is not 100 parameters to render, send and parse each time."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
    return column.in_(values)


def lock_until_commit(session: Session, name: str) -> None:
    """Wait for, then hold until the transaction ends, the lock called `name`: transactions that
    take it run one after the other (a count and the insert it allows, across replicas). On
    PostgreSQL a transaction-level advisory lock keyed by a stable hash of the name; on SQLite the
    database's one write lock (`BEGIN IMMEDIATE`; a transaction that already wrote holds it)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        return
    raw = connection.connection.dbapi_connection
    if raw is not None and not raw.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, pool_size: int = 20) -> Engine:
    """`pool_size`: connections kept open (PostgreSQL). hide_parameters: a statement's parameters
    (a row's values: e-mails, names, free text) never appear in SQLAlchemy's errors, and so never
    in a logged traceback."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


class Database:
    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.engine = make_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error (nothing half-written)."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision. On PostgreSQL an advisory lock makes replicas that
    start together migrate one after the other."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.commit()
        try:
            config = alembic_config(str(engine.url))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                connection.commit()
