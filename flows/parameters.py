"""Parameter types for API-triggered runs. Prefect checks parameters against the deployment's JSON schema
before it creates a run, but a schema's `format` (date, date-time) is not checked there; these patterns
make a malformed date a 409 that names the field, before any work starts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import Field

IsoDate = Annotated[date, Field(json_schema_extra={"pattern": r"^\d{4}-\d{2}-\d{2}$"})]
IsoDateTime = Annotated[
    datetime,
    Field(
        json_schema_extra={
            "pattern": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"
        }
    ),
]
BlockName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[a-z0-9][a-z0-9-]*$")]
