"""The audit trail: structured, append-only records of every flow run's start and end and of every billing
change (ingest, rollup, close, adjustments), in the ledger's database.

Billing records are written in the same transaction as the change they describe, so neither exists
without the other. Parameters are redacted before they are written: any key that names a secret, any
value that carries credentials in a URL, and any Secret-typed value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import SecretBytes, SecretStr

from tasks.schema import audit_log

REDACTED = "***"
SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|auth|credential|apprise|url", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+(:[^/\s@]*)?@", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    kind: str | None = None
    flow: str | None = None
    flow_run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` safe to store: secret-named keys and Secret values masked, URL credentials cut."""
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if key and SECRET_KEY.search(key) and isinstance(value, str) and value:
        return (
            REDACTED
            if not value.startswith(("http://", "https://"))
            else URL_CREDENTIALS.sub(r"\g<scheme>***@", value)
        )
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        return URL_CREDENTIALS.sub(r"\g<scheme>***@", value)
    if hasattr(value, "model_dump"):  # pydantic models (AgentConfig, TrainConfig)
        return redact(value.model_dump(mode="json"), key)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def record(connection: sa.Connection, kind: str, detail: Mapping[str, Any], **fields: Any) -> None:
    """Append one record inside the caller's transaction."""
    connection.execute(
        audit_log.insert().values(
            at=datetime.now(UTC),
            kind=kind,
            detail=json.dumps(redact(dict(detail)), default=str, sort_keys=True),
            **fields,
        )
    )


def query(engine: sa.Engine, q: AuditQuery) -> list[dict[str, Any]]:
    a = audit_log.c
    statement = sa.select(audit_log).order_by(a.at.desc(), a.id.desc()).limit(q.limit)
    for column, value in ((a.kind, q.kind), (a.flow, q.flow), (a.flow_run_id, q.flow_run_id)):
        if value is not None:
            statement = statement.where(column == value)
    if q.since is not None:
        statement = statement.where(a.at >= q.since)
    if q.until is not None:
        statement = statement.where(a.at < q.until)
    with engine.connect() as connection:
        return [
            dict(row._mapping) | {"detail": json.loads(row.detail)} for row in connection.execute(statement)
        ]
