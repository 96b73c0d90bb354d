"""PostgreSQL for tests: the server on 127.0.0.1:5432 (trust auth), a fresh database per use.

Tests that need it skip when it is absent, unless REQUIRE_POSTGRES=1 (CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest

ADMIN_DSN = os.environ.get("GPUFLOWS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _run(coro):  # noqa: ANN001, ANN202 - tiny sync bridge
    return asyncio.run(coro)


def require_postgres() -> None:
    async def ping() -> None:
        connection = await asyncpg.connect(ADMIN_DSN, timeout=5)
        await connection.close()

    try:
        _run(ping())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES=1) but {ADMIN_DSN} failed: {exc}")
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN}: {exc}")


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Creates a database, yields its asyncpg-style URL, drops it (and its connections) afterwards."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(ADMIN_DSN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    _run(admin(f'CREATE DATABASE "{name}"'))
    base = ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _run(admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        _run(admin(f'DROP DATABASE IF EXISTS "{name}"'))
