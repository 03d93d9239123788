"""Alembic environment: runs on a connection handed over by storage.db.migrate, or on DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine

from storage.db import normalize_url
from storage.tables import Base

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from bot.config import Settings

    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
