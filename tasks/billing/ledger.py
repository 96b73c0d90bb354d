"""The usage ledger: GPU usage events, a quarantine for rows that cannot be billed, and ingest batches.

One code path (SQLAlchemy Core) for a SQLite file (the embedded default) and PostgreSQL (production);
the schema is created and upgraded by Alembic migrations (tasks/ledger_migrations).

Ingestion of a batch is atomic: its new events, its quarantined rows and its batch record are written in
one transaction, or none of them is. Duplicates (same source + event id, in the file or already in the
ledger) are ignored and counted; a row that cannot be billed is quarantined with its reason, never dropped.
"""

from __future__ import annotations

import gc
import json
import re
from array import array
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tasks.audit import record as audit_record
from tasks.billing.files import REQUIRED, TEXT_FIELDS, escaped, read_rows
from tasks.billing.rows import (
    ONE_MICROSECOND,
    PLAUSIBLE,
    Plausible,
    RowParser,
    Staged,
    gpu_microseconds,
    number,
    time_text,
)
from tasks.billing.staging import CHUNK_ROWS, Stager, stage_and_insert
from tasks.errors import InputError
from tasks.schema import ingest_batches, quarantine, usage_conflicts, usage_events

# The GPU types the ledger knows without a rate card. The one home of the list: a type the RateCard block
# prices is accepted too (accepted_gpu_types), by ingestion, capacity and the train flow alike.
DEFAULT_GPU_TYPES = frozenset({"rtx4090", "rtx5090", "a100", "h100", "l40s", "a10", "t4", "v100", "p100"})


def accepted_gpu_types(priced: Iterable[str] = ()) -> frozenset[str]:
    return DEFAULT_GPU_TYPES | {gpu_type.strip().lower() for gpu_type in priced}


MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)
# PostgreSQL advisory lock: ingest batches take it shared, a period close takes it exclusive, so a close
# sees every batch that committed before it and none that is half-way.
LEDGER_WRITE_LOCK = 0x6770_7566_6C6F_7701


@dataclass(frozen=True, slots=True)
class UsageEvent:
    source: str
    event_id: str
    customer: str
    project: str
    job: str
    supplier: str
    node: str
    gpu_type: str
    gpu_count: Decimal
    start: datetime
    end: datetime

    @property
    def gpu_hours(self) -> Decimal:
        return Decimal(self.gpu_microseconds) / MICROSECONDS_PER_HOUR

    @property
    def gpu_microseconds(self) -> int:
        return gpu_microseconds(self.start, self.end, self.gpu_count)

    def as_json(self) -> dict[str, str]:
        """The event as a usage file row would carry it (what the quarantine keeps of a rejected one)."""
        return {k: v.isoformat() if isinstance(v, datetime) else str(v) for k, v in asdict(self).items()}


def staged(event: UsageEvent) -> Staged:
    """An event in the staged form (what the ledger stores, with what a rollup sums)."""
    return (
        event.source, event.event_id, event.customer, event.project, event.job, event.supplier, event.node,
        event.gpu_type, str(event.gpu_count), time_text(event.start), time_text(event.end),
        event.start.astimezone(UTC).date().isoformat(),
        (event.end.astimezone(UTC) - ONE_MICROSECOND).date().isoformat(), event.gpu_microseconds,
    )  # fmt: skip


def event_of(row: Staged) -> UsageEvent:
    """The event a staged row holds (a conflict's differences are worded from it)."""
    return UsageEvent(
        *row[:8],
        Decimal(row[8]),
        datetime.fromisoformat(row[9]).replace(tzinfo=UTC),
        datetime.fromisoformat(row[10]).replace(tzinfo=UTC),
    )


def as_utc(value: datetime) -> datetime:
    """A stored time as aware UTC: SQLite hands back naive datetimes, which the ledger writes in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class IngestSummary:
    batch_id: int
    file: str
    rows: int
    inserted: int
    duplicates: int
    quarantined: int
    reasons: dict[str, int]
    conflicts: int = 0  # rows = inserted + duplicates + conflicts + quarantined


@dataclass(frozen=True, slots=True)
class Conflict:
    line: int
    raw: str
    source: str
    event_id: str
    differences: str


COMPARED = ("customer", "project", "job", "supplier", "node", "gpu_type", "gpu_count", "start", "end")


def differences(sent: UsageEvent, held: UsageEvent) -> str:
    """What a re-sent event changes, field by field ("" when it is the same event)."""
    changed = [
        f"{name} {getattr(held, name)!s} -> {getattr(sent, name)!s}"
        for name in COMPARED
        if getattr(sent, name) != getattr(held, name)
    ]
    return "; ".join(changed)


# ------------------------------------------------------------------------------------------------ parsing


UNSTORABLE = re.compile("[\x00-\x1f\ud800-\udfff]")  # control characters and lone surrogates


def parse_time(value: Any, field_name: str, bounds: Plausible = PLAUSIBLE) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"missing {field_name}" if value in (None, "") else f"{field_name} is not a time")
    if len(value) > 64:
        raise ValueError(f"unparsable time in {field_name}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"unparsable time in {field_name}: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field_name} {value!r} has no timezone (use UTC, e.g. 2026-05-01T10:00:00Z)")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{field_name} {value!r} is out of range") from None
    if bounds.outside(parsed):
        raise ValueError(f"{field_name} {value!r} is {bounds.outside_reason}")
    return parsed


def _text(record: dict[str, Any], name: str, bounds: Plausible) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    text = value.strip() if isinstance(value, str) else str(value)
    if len(text) > bounds.max_id_chars:
        raise ValueError(f"{name} is longer than {bounds.max_id_chars} characters")
    if UNSTORABLE.search(text):
        raise ValueError(f"{name} contains a control character")
    return text


def parse_event(
    record: dict[str, Any], default_source: str, gpu_types: Collection[str], bounds: Plausible = PLAUSIBLE
) -> UsageEvent:
    """A billable usage event, or ValueError with the reason the row goes to quarantine."""
    texts = {name: _text(record, name, bounds) for name in TEXT_FIELDS}
    for name in REQUIRED:
        if record.get(name) in (None, "") or (name in texts and not texts[name]):
            raise ValueError(f"missing {name}")
    gpu_count = number(record["gpu_count"], "gpu_count")
    start = parse_time(record["start"], "start", bounds)
    if record.get("end") not in (None, ""):
        end = parse_time(record["end"], "end", bounds)
    elif record.get("duration_seconds") not in (None, ""):
        seconds = number(record["duration_seconds"], "duration_seconds")
        if seconds < 0:
            raise ValueError("negative duration")
        if seconds > Decimal(int(bounds.max_duration.total_seconds())):
            raise ValueError(f"duration_seconds {seconds} is longer than {bounds.max_duration.days} days")
        end = start + timedelta(seconds=float(seconds))
    else:
        raise ValueError("missing end (or duration_seconds)")
    event = UsageEvent(
        source=texts["source"] or default_source,
        event_id=texts["event_id"],
        customer=texts["customer"],
        project=texts["project"],
        job=texts["job"],
        supplier=texts["supplier"],
        node=texts["node"],
        gpu_type=texts["gpu_type"].lower(),
        gpu_count=gpu_count,
        start=start,
        end=end,
    )
    check_event(event, gpu_types, bounds)
    return event


# ------------------------------------------------------------------------------------------------ ingest


def ingest_file(
    engine: sa.Engine, path: Path, source: str | None = None, gpu_types: Collection[str] = DEFAULT_GPU_TYPES
) -> IngestSummary:
    """One atomic batch: new events inserted, duplicates counted, conflicts recorded, bad rows quarantined
    with their reason. An event's identity is its producer's source and id: rows name their `source`, or
    the ingest names one; a file with neither is refused (a file name is no identity: renamed, it would
    bill twice; two suppliers' usage.jsonl would collide)."""
    label = str(path)
    events: dict[tuple[str, str], int] = {}  # the first of each identity: its place in the batch
    rejected: list[Rejected] = []
    conflicts: list[Conflict] = []
    rows = in_file_duplicates = 0
    fast = RowParser(source or "", gpu_types)

    def stage_record(record: dict[str, Any]) -> Staged:
        """The common row by the fast path; any other by the one definition, which words the reason."""
        return fast.parse(record) or staged(parse_event(record, source or "", gpu_types))

    def judged(record: dict[str, Any]) -> Staged | None:
        try:
            return stage_record(record)
        except ValueError:
            return None

    with BatchWriter(engine, label, source or "(per row)") as batch:
        collecting = gc.isenabled()
        gc.disable()  # a million rows build millions of objects and no cycle: collections only cost time
        try:
            for line, raw, record, problem in read_rows(path):
                rows += 1
                if record is None or problem is not None:
                    rejected.append(Rejected(line, escaped(raw), problem or "unreadable row"))
                    continue
                try:
                    row = stage_record(record)
                except ValueError as exc:
                    rejected.append(Rejected(line, escaped(raw), str(exc)))
                    continue
                if not row[0]:
                    raise InputError(
                        f"usage file {label}: line {line} names no source and none was given: name the "
                        "system that produced the events (a `source` column, or --source), so a re-sent "
                        "file is recognised"
                    )
                key = (row[0], row[1])
                first = events.get(key)
                if first is None:
                    events[key] = batch.add(row, line)
                elif (held := batch.rows[first]) != row and (
                    changed := differences(event_of(row), event_of(held))
                ):
                    conflicts.append(
                        Conflict(line, escaped(raw), *key, f"line {batch.lines[first]}: {changed}")
                    )
                else:
                    in_file_duplicates += 1
        finally:
            if collecting:
                gc.enable()
        return batch.finish(
            rows, rejected, in_file_duplicates, conflicts, lambda wanted: reread(path, wanted, judged)
        )


def reread(
    path: Path, wanted: dict[int, Staged], judged: Callable[[dict[str, Any]], Staged | None]
) -> dict[int, bytes]:
    """Some rows' bytes, read again (a conflict with the ledger keeps them; a batch does not hold every
    row's bytes while it runs), each only if it still reads as the event that was staged. A file gone or
    rewritten meanwhile costs only the bytes: the event is then kept as JSON."""
    try:
        return {
            line: raw
            for line, raw, record, problem in read_rows(path)
            if line in wanted and record is not None and problem is None and judged(record) == wanted[line]
        }
    except InputError:
        return {}


def ingest_events(
    engine: sa.Engine,
    events: Sequence[UsageEvent],
    label: str,
    source: str,
    gpu_types: Collection[str] = DEFAULT_GPU_TYPES,
) -> IngestSummary:
    """A batch of events made in code (a flow recording its own GPU time): the same checks, dedup,
    quarantine and audit as a file's rows, without a round trip through text."""
    accepted: dict[tuple[str, str], tuple[Staged, int, bytes]] = {}
    rejected: list[Rejected] = []
    duplicates = 0
    for line, event in enumerate(events, start=1):
        try:
            if not all((event.source, event.event_id, event.customer, event.project, event.supplier)):
                raise ValueError("missing source, event_id, customer, project or supplier")
            check_event(event, gpu_types)
        except ValueError as exc:
            rejected.append(Rejected(line, json.dumps(event.as_json()), str(exc)))
            continue
        if (event.source, event.event_id) in accepted:
            duplicates += 1
        accepted.setdefault(
            (event.source, event.event_id), (staged(event), line, json.dumps(event.as_json()).encode())
        )
    raws = {line: raw for _, line, raw in accepted.values()}
    with BatchWriter(engine, label, source) as batch:
        for row, line, _ in accepted.values():
            batch.add(row, line)
        return batch.finish(len(events), rejected, duplicates, [], lambda _wanted: raws)


def check_event(event: UsageEvent, gpu_types: Collection[str], bounds: Plausible = PLAUSIBLE) -> None:
    """ValueError with the reason an event cannot be billed: the one set of checks for rows parsed from a
    file and for events made in code (a flow recording its own GPU time)."""
    if event.gpu_type not in gpu_types:
        raise ValueError(f"unknown GPU type {event.gpu_type!r}")
    if not event.gpu_count.is_finite() or event.gpu_count <= 0:
        raise ValueError(f"gpu_count must be positive, got {event.gpu_count}")
    if event.gpu_count > bounds.max_gpus:
        raise ValueError(
            f"gpu_count {event.gpu_count} is over the ledger's limit of {bounds.max_gpus} per event"
        )
    if event.start.tzinfo is None or event.end.tzinfo is None:
        raise ValueError("start and end must carry a timezone")
    for name, when in (("start", event.start), ("end", event.end)):
        if bounds.outside(when):
            raise ValueError(f"{name} {when.isoformat()} is {bounds.outside_reason}")
    if event.end <= event.start:
        raise ValueError("end before start" if event.end < event.start else "zero duration")
    if event.end - event.start > bounds.max_duration:
        raise ValueError(f"the event lasts longer than {bounds.max_duration.days} days")


class BatchWriter:
    """One batch, one transaction: the batch record, new events, quarantined rows, conflicts and the audit
    record, or nothing. The transaction opens when the first chunk of events is ready (a small file is read
    whole before the ledger is locked; a large one is staged while the rest is read) and commits when the
    block ends after `finish`. An event the ledger already holds is a duplicate when it is the same, a
    conflict when not."""

    def __init__(self, engine: sa.Engine, label: str, source: str) -> None:
        self.engine, self.label, self.source = engine, label, source
        self.now = datetime.now(UTC)
        self.rows: list[Staged] = []  # every event new to the batch, in order, and its line
        self.lines = array("q")
        self._staged = 0  # rows[:_staged] are on their way to the ledger
        self._stack = ExitStack()
        self._stager: Stager | None = None

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return self._stack.__exit__(*exc)

    def add(self, row: Staged, line: int) -> int:
        """Adds an event new to the batch; returns its place in it."""
        self.rows.append(row)
        self.lines.append(line)
        if len(self.rows) - self._staged >= CHUNK_ROWS:
            self._flush()
        return len(self.rows) - 1

    def _flush(self) -> Stager:
        if self._stager is None:
            self.connection = connection = self._stack.enter_context(self.engine.begin())
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": LEDGER_WRITE_LOCK}
                )
            self.batch_id = connection.execute(
                ingest_batches.insert()
                .values(
                    file=self.label,
                    source=self.source,
                    rows=0,
                    inserted=0,
                    duplicates=0,
                    quarantined=0,
                    created_at=self.now,
                )  # fmt: skip
                .returning(ingest_batches.c.id)
            ).scalar_one()
            self._stager = self._stack.enter_context(
                Stager(connection, self.batch_id, self.now, stage_and_insert)
            )
        self._stager.submit(self.rows[self._staged :])
        self._staged = len(self.rows)
        return self._stager

    def finish(
        self,
        rows: int,
        rejected: list[Rejected],
        in_file_duplicates: int,
        conflicts: list[Conflict],
        raws: Callable[[dict[int, Staged]], dict[int, bytes]],
    ) -> IngestSummary:
        """raws: {line: staged row} -> those lines' bytes, for the events that conflict with the ledger."""
        result = self._flush().close()
        connection, batch_id, now, path = self.connection, self.batch_id, self.now, self.label
        changed = [
            (pos, change)
            for pos, held in result.differing
            if (change := differences(sent := event_of(self.rows[pos]), held_event(sent, held)))
        ]
        raw = raws({self.lines[pos]: self.rows[pos] for pos, _ in changed}) if changed else {}
        against_ledger = [
            Conflict(
                line := self.lines[pos],
                escaped(raw[line]) if line in raw else json.dumps(event_of(self.rows[pos]).as_json()),
                self.rows[pos][0],
                self.rows[pos][1],
                f"ledger: {change}",
            )
            for pos, change in changed
        ]
        conflicts = [*conflicts, *against_ledger]
        if conflicts:
            connection.execute(
                usage_conflicts.insert(),
                [
                    {
                        "batch_id": batch_id,
                        "file": path,
                        "line": c.line,
                        "source": c.source,
                        "event_id": c.event_id,
                        "differences": c.differences[:10_000],
                        "raw": c.raw[:10_000],
                        "recorded_at": now,
                    }
                    for c in conflicts
                ],
            )
        if rejected:
            connection.execute(
                quarantine.insert(),
                [
                    {
                        "batch_id": batch_id,
                        "file": path,
                        "line": r.line,
                        "raw": r.raw[:10_000],
                        "reason": r.reason,
                        "quarantined_at": now,
                    }
                    for r in rejected
                ],
            )
        inserted = result.inserted
        duplicates = in_file_duplicates + result.known - len(against_ledger)
        connection.execute(
            ingest_batches.update()
            .where(ingest_batches.c.id == batch_id)
            .values(
                rows=rows,
                inserted=inserted,
                duplicates=duplicates,
                conflicts=len(conflicts),
                quarantined=len(rejected),
            )  # fmt: skip
        )
        audit_record(
            connection,
            "ingest",
            {
                "batch_id": batch_id,
                "file": path,
                "source": self.source,
                "rows": rows,
                "inserted": inserted,
                "duplicates": duplicates,
                "conflicts": len(conflicts),
                "quarantined": len(rejected),
            },
        )
        reasons: dict[str, int] = {}
        for r in rejected:
            kind = r.reason.split(":")[0].split(" '")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        return IngestSummary(
            batch_id, path, rows, inserted, duplicates, len(rejected), reasons, len(conflicts)
        )


def held_event(sent: UsageEvent, held: dict[str, Any]) -> UsageEvent:
    """The ledger's version of a re-sent event, from the columns staging compared."""
    return UsageEvent(
        sent.source,
        sent.event_id,
        held["customer"],
        held["project"],
        held["job"],
        held["supplier"],
        held["node"],
        held["gpu_type"],
        Decimal(str(held["gpu_count"])).normalize(),
        as_utc(held["start_at"]),
        as_utc(held["end_at"]),
    )


def count_events(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar_one()


def quarantined(engine: sa.Engine, batch_id: int | None = None) -> list[dict[str, Any]]:
    query = sa.select(quarantine).order_by(quarantine.c.id)
    if batch_id is not None:
        query = query.where(quarantine.c.batch_id == batch_id)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
