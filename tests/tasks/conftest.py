"""The usage ledger for domain tests: each test runs on a fresh SQLite file and, where PostgreSQL is
available (always in CI), on a fresh PostgreSQL database: one code path, both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.database import connect, forget
from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    with fresh_database("gpuflows_ledger") as dsn:
        yield dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[sa.Engine]:
    engine = connect(ledger_url)
    yield engine
    forget(ledger_url)
