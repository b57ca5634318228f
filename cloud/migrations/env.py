"""Alembic environment: runs on the connection `cloud.migrate` hands over (never a URL here)."""

from __future__ import annotations

from alembic import context

from cloud.schema import complete_metadata

connection = context.config.attributes["connection"]
# render_as_batch lets ALTERs work on SQLite (copy-and-move); PostgreSQL alters in place.
context.configure(
    connection=connection,
    target_metadata=complete_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
