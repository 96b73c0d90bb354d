"""Reading usage files as users write them: JSONL or CSV, row by row, every row's bytes kept so any row can
be quarantined as it came (escaped when it is). A file-level problem (unreadable, a CSV without a proper
header) refuses the file with one line; a row-level one is that row's alone."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tasks.errors import InputError

REQUIRED = ("event_id", "customer", "project", "supplier", "gpu_type", "gpu_count", "start")
TEXT_FIELDS = ("source", "event_id", "customer", "project", "job", "supplier", "node", "gpu_type")


def escaped(raw: bytes) -> str:
    """A row's bytes as storable text: invalid UTF-8 and control characters (NUL, form feed) escaped, so
    any row can be quarantined as it came, on PostgreSQL too."""
    text = raw[:40_000].decode("utf-8", errors="backslashreplace")
    if CONTROL.search(text) is None:  # the usual row: nothing to escape
        return text[:10_000]
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)[:10_000]


CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")  # control characters but tab

COLUMNS = (*TEXT_FIELDS, "gpu_count", "start", "end", "duration_seconds")


Row = tuple[int, bytes, dict[str, Any] | None, str | None]  # line, raw bytes, record or None, problem


def read_csv_rows(path: Path, data: bytes) -> Iterator[Row]:
    """A CSV as users write it: the first line must be a header of known columns (else the file is refused
    with one line, nothing ingested); a row that is not UTF-8, or has extra cells, is quarantined alone."""
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    physical = text.split("\n")  # only newlines end a CSV line (a form feed inside a cell does not)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"usage file {path}: the header line is not CSV ({exc})") from None
    unknown = [name for name in header if name not in COLUMNS]
    missing = [name for name in REQUIRED if name not in header]
    if unknown or missing:
        if set(header) & set(COLUMNS):
            problem = (f"unknown column(s) {', '.join(repr(n) for n in unknown)}" if unknown else "") + (
                f"{'; ' if unknown else ''}missing column(s) {', '.join(missing)}" if missing else ""
            )
        else:
            problem = "its first line is not a header"
        raise InputError(
            f"usage file {path}: {escaped(problem.encode('utf-8', 'surrogateescape'))} "
            f"(a header naming {', '.join(REQUIRED)} is required; known columns: {', '.join(COLUMNS)})"
        )
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise InputError(
            f"usage file {path}: column(s) {', '.join(twice)} appear more than once in the header"
        )
    previous = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            raw = "\n".join(physical[previous:line]).encode("utf-8", "surrogateescape")
            previous = line
            yield line, raw, None, f"not CSV: {exc}"
            continue
        line = reader.line_num
        raw = "\n".join(physical[previous:line]).encode("utf-8", "surrogateescape")
        previous = line
        if not cells or not any(cell.strip() for cell in cells):
            continue
        if any("\udc80" <= c <= "\udcff" for cell in cells for c in cell):
            yield line, raw, None, "not UTF-8"
        elif len(cells) > len(header):
            yield line, raw, None, f"{len(cells)} cells, the header has {len(header)}"
        else:
            yield line, raw, dict(zip(header, cells, strict=False)), None


def _widened(record: dict[str, Any]) -> bool:
    """Whether orjson may have read an integer past 64 bits as a float (json keeps it exact)."""
    return float in map(type, record.values()) and any(
        type(v) is float and not -(2.0**63) < v < 2.0**64 for v in record.values()
    )


def read_rows(path: Path) -> Iterator[Row]:
    """(line, raw bytes, record or None, problem) for every data row of a JSONL or CSV file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"usage file {path} cannot be read: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        yield from read_csv_rows(path, data)
        return
    for number, raw in enumerate(data.splitlines(), start=1):
        try:  # orjson reads the common row about twice as fast; what it refuses, json words the reason for
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if type(record) is dict and not _widened(record):
                yield number, raw, record, None
                continue
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield number, raw, None, "not UTF-8"
            continue
        except json.JSONDecodeError as exc:
            yield number, raw, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
            continue
        except (RecursionError, ValueError):  # nested past the parser's depth, or a number too long
            yield number, raw, None, "invalid JSON: too deeply nested or too long a number"
            continue
        if not isinstance(record, dict):
            yield number, raw, None, "not a JSON object"
            continue
        yield number, raw, record, None
