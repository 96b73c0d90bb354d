"""Alembic environment of the usage ledger: runs on the connection tasks.ledger.migrate() hands over."""

from alembic import context

from tasks.ledger import metadata

connection = context.config.attributes["connection"]
# Own version table: the ledger may share a PostgreSQL database with Prefect, which has its own.
context.configure(connection=connection, target_metadata=metadata, version_table="ledger_schema_version")
with context.begin_transaction():
    context.run_migrations()
