"""Parameter types for API-triggered runs. Prefect checks parameters against the deployment's JSON schema
before it creates a run, but a schema's `format` (date, date-time) is not checked there; these patterns
make a malformed date a 409 that names the field, before any work starts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator

# Months 01-12, days 01-31, hours 00-23: `2024-13-45` is a 409. A date the calendar lacks (`2024-02-30`)
# passes the pattern and fails the run's parameter validation in its first second, with one line.
DAY = r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
IsoDate = Annotated[date, Field(json_schema_extra={"pattern": rf"^{DAY}$"})]
IsoDateTime = Annotated[
    datetime,
    Field(
        json_schema_extra={
            "pattern": rf"^{DAY}[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-]\d{{2}}:?\d{{2}})?$"
        }
    ),
]
BlockName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class Outage(BaseModel):
    """A platform outage an operator declares (UTC when no offset is given); end is exclusive."""

    start: IsoDateTime
    end: IsoDateTime

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> Outage:
        if self.end <= self.start:
            raise ValueError(
                f"an outage must end after it starts: {self.start:%Y-%m-%d %H:%M} .. "
                f"{self.end:%Y-%m-%d %H:%M}"
            )
        return self
