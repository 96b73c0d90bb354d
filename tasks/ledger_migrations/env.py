"""Alembic environment of the ledger database: runs on the connection tasks.database.migrate() hands over."""

from alembic import context

from tasks.schema import metadata

connection = context.config.attributes["connection"]
# Own version table: the ledger may share a PostgreSQL database with Prefect, which has its own.
context.configure(connection=connection, target_metadata=metadata, version_table="ledger_schema_version")
with context.begin_transaction():
    context.run_migrations()
