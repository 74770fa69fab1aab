"""Alembic environment: runs on the connection handed in by ``jobs.migrate``."""
from __future__ import annotations

from alembic import context

from jobs.schema import target_metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through 'ledgerbridge db upgrade' (jobs.migrate)")

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
