"""Usage rows on their way to the ledger: the staged form every accepted event takes, the plausibility bounds
a row must keep, and a lean parser for the row nearly every producer writes.

`ledger.parse_event` is the one definition of what a row means. `RowParser.parse` accepts only rows it can
read without doubt (plain text fields, a known GPU type, a UTC time, a whole-second duration or an end time
inside the ledger's bounds) and gives the same staged tuple `parse_event` would; anything else returns None
and goes the long way, where its reason is worded. A property test holds the two equal. Staging a
million rows was dominated by building a `UsageEvent` per row and by the JSON module (the README's ingest
benchmark), hence this path.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from tasks.billing.files import TEXT_FIELDS

# (source, event_id, customer, project, job, supplier, node, gpu_type, gpu_count, start_at, end_at,
#  start_day, end_day, gpu_microseconds): tasks/schema.STAGED_COLUMNS, times as naive UTC text the way
# SQLAlchemy stores them in SQLite (2026-05-01 10:00:00.000000), so a re-sent event compares equal there,
# and PostgreSQL reads them AT TIME ZONE 'UTC' (tasks/billing/staging.py).
Staged = tuple[str, str, str, str, str, str, str, str, str, str, str, str, str, int]

ONE_MICROSECOND = timedelta(microseconds=1)


def number(value: Any, name: str) -> Decimal:
    """A finite decimal from a JSON number or text, else ValueError saying why."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} is not a number (got {type(value).__name__})")
    text = str(value).strip()
    if len(text) > 40:
        raise ValueError(f"{name} is not a plausible number ({len(text)} characters)")
    try:
        parsed = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not parsed.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    return parsed


def gpu_microseconds(start: datetime, end: datetime, gpu_count: Decimal) -> int:
    """GPU count x duration in microseconds, an integer (rounded half-even once, at most half a GPU-µs)."""
    micro = (end - start) // ONE_MICROSECOND
    return int((Decimal(micro) * gpu_count).quantize(Decimal(1), ROUND_HALF_EVEN))


def time_text(when: datetime) -> str:
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@dataclass(frozen=True, slots=True)
class Plausible:
    """What a billable event may look like; anything outside is quarantined with the bound it broke.
    One bad value costs its row, never its file."""

    epoch: datetime = datetime(2015, 1, 1, tzinfo=UTC)  # no GPU usage is billed from before the ledger
    future_skew: timedelta = timedelta(hours=1)  # clocks drift; usage from the future does not exist
    max_duration: timedelta = timedelta(days=31)
    max_gpus: Decimal = Decimal(1024)
    max_id_chars: int = 200

    def outside(self, when: datetime) -> bool:
        return not self.epoch <= when <= clock() + self.future_skew

    @property
    def outside_reason(self) -> str:
        return f"outside the ledger's range ({self.epoch:%Y-%m-%d} to now)"


PLAUSIBLE = Plausible()
_clock: list[Any] = [-1.0, None]  # (monotonic s, now): a million rows need not read the clock 3 million times


def clock() -> datetime:
    """Now, read at most twice a second."""
    tick = time.monotonic()
    if tick - _clock[0] > 0.5:
        _clock[:] = [tick, datetime.now(UTC)]
    return _clock[1]


class RowParser:
    """One batch's fast path; its bounds are fixed when the batch starts. The clock only moves forward, so
    a time this parser accepts as not in the future, `parse_event` (reading the clock later) accepts too;
    a time past that goes the long way."""

    def __init__(
        self, default_source: str, gpu_types: Collection[str], bounds: Plausible = PLAUSIBLE
    ) -> None:
        self.default_source = default_source
        self.gpu_types = frozenset(gpu_types)
        self.max_chars = bounds.max_id_chars
        self.earliest = bounds.epoch
        self.latest = clock() + bounds.future_skew
        self.max_seconds = int(bounds.max_duration.total_seconds())
        self.max_gpus = bounds.max_gpus
        self._counts: dict[tuple[type, Any], tuple[Decimal, str] | None] = {}
        self._days: dict[date, str] = {}
        # A file names a few customers, projects and suppliers a million times: one copy of each text
        # (a batch holds its rows until it commits).
        self._shared = {}.setdefault

    def count(self, value: Any) -> tuple[Decimal, str] | None:
        """A GPU count as parse_event reads it, and its staged text, remembered by (type, value): a file
        holds a handful."""
        key = (type(value), value)
        try:
            return self._counts[key]
        except KeyError:
            pass
        except TypeError:  # unhashable: a list or an object
            return None
        try:
            parsed: Decimal | None = number(value, "gpu_count")
        except ValueError:
            parsed = None
        known = (parsed, str(parsed)) if parsed is not None and 0 < parsed <= self.max_gpus else None
        if len(self._counts) < 10_000:
            self._counts[key] = known
        return known

    def day(self, when: datetime) -> str:
        day = when.date()
        text = self._days.get(day)
        if text is None:
            text = self._days[day] = day.isoformat()
        return text

    def parse(self, record: dict[str, Any]) -> Staged | None:
        """The staged row, or None when only parse_event may judge this record."""
        get = record.get
        texts = []
        for name in TEXT_FIELDS:
            value = get(name)
            if value is None:
                value = ""
            elif type(value) is not str:
                if type(value) is not int or not -(10**18) < value < 10**18:
                    return None
                value = str(value)
            texts.append(value)
        joined = "".join(texts)
        # Printable text has no control character, lone surrogate or whitespace but the ASCII space.
        if not joined.isprintable() or (" " in joined and any(t != t.strip() for t in texts)):
            return None
        if max(map(len, texts)) > self.max_chars:
            return None
        source, event_id, customer, project, job, supplier, node, gpu_type = texts
        if not (event_id and customer and project and supplier and gpu_type):
            return None
        source = source or self.default_source
        gpu_type = gpu_type.lower()
        if not source or gpu_type not in self.gpu_types:
            return None
        counted = self.count(get("gpu_count"))
        start_text = get("start")
        if counted is None or type(start_text) is not str or len(start_text) > 40:
            return None
        count, count_text = counted
        try:
            start = datetime.fromisoformat(start_text)
        except ValueError:
            return None
        if start.tzinfo is not UTC or not self.earliest <= start <= self.latest:
            return None
        end_text = get("end")
        if end_text is None or end_text == "":
            seconds = get("duration_seconds")
            if type(seconds) is not int or not 0 < seconds <= self.max_seconds:
                return None
            end = start + timedelta(seconds=seconds)
        elif type(end_text) is str and len(end_text) <= 40:
            try:
                end = datetime.fromisoformat(end_text)
            except ValueError:
                return None
            if end.tzinfo is not UTC or not start < end <= start + timedelta(seconds=self.max_seconds):
                return None
        else:
            return None
        if end > self.latest:
            return None
        micro = (end - start) // ONE_MICROSECOND
        share = self._shared
        return (
            share(source, source), event_id, share(customer, customer), share(project, project),
            share(job, job), share(supplier, supplier), share(node, node), share(gpu_type, gpu_type),
            count_text,
            start.replace(tzinfo=None).isoformat(" ", "microseconds"),
            end.replace(tzinfo=None).isoformat(" ", "microseconds"),
            self.day(start), self.day(end - ONE_MICROSECOND),
            micro if count == 1 else gpu_microseconds(start, end, count),
        )  # fmt: skip
