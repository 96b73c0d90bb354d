"""Where the usage ledger lives: a SQLAlchemy URL, kept as a Secret (a PostgreSQL URL carries a password)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator


class LedgerDatabase(Block):
    """The usage ledger's database: a SQLite file on the embedded default, PostgreSQL in production."""

    _block_type_name = "gpuflows Ledger Database"
    _block_type_slug = "gpuflows-ledger-database"
    _description = "SQLAlchemy URL of the usage ledger (sqlite:///… or postgresql+psycopg://…)."
    # A refused URL must not come back inside the error: it carries the password.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr = Field(description="sqlite:///absolute/path.db or postgresql+psycopg://user:pass@host/db")

    @field_validator("url")
    @classmethod
    def _supported(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().split("://", 1)[0]
        if scheme not in ("sqlite", "postgresql+psycopg", "postgresql"):
            raise ValueError(f"the ledger runs on sqlite or postgresql+psycopg, not {scheme}")  # scheme only
        return value
