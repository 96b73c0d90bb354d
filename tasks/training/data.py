"""Training datasets: read JSONL in four formats, validate all of it on CPU before any model is loaded.

Formats (one JSON object per line):
- `messages`  (OpenAI): {"messages": [{"role": "system|user|assistant", "content": "..."}, ...]}
- `sharegpt`: {"conversations": [{"from": "human|gpt|system", "value": "..."}, ...]} (roles mapped)
- `alpaca`:   {"instruction": "...", "input": "...", "output": "..."}
- `text`:     {"text": "..."}
Every problem is reported with its file and line; nothing is skipped silently.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.errors import InputError

Format = Literal["messages", "sharegpt", "alpaca", "text"]
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
MAX_REPORTED = 20


@dataclass(frozen=True, slots=True)
class Example:
    source: str  # "file:line"
    messages: tuple[tuple[str, str], ...] = ()  # (role, content) for chat formats
    text: str | None = None  # plain text format

    def as_record(self) -> dict[str, Any]:
        if self.text is not None:
            return {"text": self.text}
        return {"messages": [{"role": r, "content": c} for r, c in self.messages]}


@dataclass(frozen=True, slots=True)
class LengthStats:
    examples: int
    min_tokens: int
    mean_tokens: float
    p95_tokens: int
    max_tokens: int
    over_max_length: int
    max_length: int


@dataclass(slots=True)
class Dataset:
    format: Format
    examples: list[Example] = field(default_factory=list)


class DatasetError(InputError):
    """Every problem found in a dataset, each as `file:line: what is wrong`."""

    def __init__(self, problems: Sequence[str]) -> None:
        shown = "\n".join(problems[:MAX_REPORTED])
        more = f"\n… and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"{len(problems)} problem(s) in the dataset:\n{shown}{more}")
        self.problems = list(problems)


def detect_format(record: Mapping[str, Any]) -> Format | None:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "text" in record:
        return "text"
    return None


def _chat(
    record: Mapping[str, Any],
    field_name: str,
    where: str,
    role_key: str,
    content_key: str,
    role_map: Mapping[str, str],
    problems: list[str],
) -> tuple[tuple[str, str], ...]:
    turns = record.get(field_name)
    if not isinstance(turns, list) or not turns:
        problems.append(f"{where}: {field_name!r} is missing or not a non-empty list of turns")
        return ()
    messages: list[tuple[str, str]] = []
    for k, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            problems.append(f"{where}: turn {k} is not an object")
            continue
        raw_role, content = turn.get(role_key), turn.get(content_key)
        role = role_map.get(str(raw_role), raw_role)
        if role not in ROLES:
            hint = f" (pass role_map {{'{raw_role}': 'assistant'}})" if raw_role is not None else ""
            problems.append(f'{where}: turn {k} has role "{raw_role}"; expected system/user/assistant{hint}')
        elif not isinstance(content, str) or not content.strip():
            problems.append(f"{where}: turn {k} ({role}) has an empty or missing {content_key!r}")
        else:
            messages.append((role, content))
    if messages and not any(r == "assistant" for r, _ in messages):
        problems.append(f"{where}: no assistant turn to learn from")
    if any(r == "system" for r, _ in messages[1:]):
        problems.append(f"{where}: a system turn may only come first")
    return tuple(messages)


def parse_record(
    record: Any, fmt: Format, where: str, role_map: Mapping[str, str], problems: list[str]
) -> Example | None:
    before = len(problems)
    if not isinstance(record, dict):
        problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
        return None
    if fmt == "messages":
        messages = _chat(record, "messages", where, "role", "content", role_map, problems)
    elif fmt == "sharegpt":
        roles = {**SHAREGPT_ROLES, **role_map}
        messages = _chat(record, "conversations", where, "from", "value", roles, problems)
    elif fmt == "alpaca":
        instruction, extra, output = record.get("instruction"), record.get("input", ""), record.get("output")
        for name, value in (("instruction", instruction), ("output", output)):
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}: missing or empty {name!r}")
        if not isinstance(extra, str):
            problems.append(f"{where}: 'input' must be a string")
        prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else str(instruction)
        messages = (("user", prompt), ("assistant", str(output)))
    else:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: missing or empty 'text'")
        return Example(where, text=text) if len(problems) == before else None
    return Example(where, messages=messages) if len(problems) == before else None


def read_dataset(
    paths: Sequence[Path], fmt: Format | Literal["auto"] = "auto", role_map: Mapping[str, str] | None = None
) -> Dataset:
    """All examples of all files, or a DatasetError listing every problem (file:line)."""
    role_map = dict(role_map or {})
    problems: list[str] = []
    examples: list[Example] = []
    chosen: Format | None = None if fmt == "auto" else fmt
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"dataset file {path} cannot be read: {exc.strerror}") from None
        for number, line_bytes in enumerate(raw.splitlines(), start=1):
            where = f"{path}:{number}"
            if not line_bytes.strip():
                continue  # blank lines carry no example
            try:
                line = line_bytes.decode("utf-8")
                record = json.loads(line)
            except UnicodeDecodeError as exc:
                problems.append(
                    f"{where}: not UTF-8 (byte 0x{line_bytes[exc.start]:02x} at column {exc.start + 1})"
                )
                continue
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            detected = detect_format(record) if isinstance(record, dict) else None
            if chosen is None:
                if detected is None:
                    problems.append(f"{where}: no messages, conversations, instruction/output or text field")
                    continue
                chosen = detected
            elif fmt == "auto" and detected is not None and detected != chosen:
                problems.append(f"{where}: a {detected} record in a {chosen} dataset (one format per run)")
                continue
            example = parse_record(record, chosen, where, role_map, problems)
            if example is not None:
                examples.append(example)
    if problems:
        raise DatasetError(problems)
    if not examples:
        raise InputError(f"no examples in {', '.join(str(p) for p in paths)}")
    assert chosen is not None
    return Dataset(chosen, examples)


def length_stats(dataset: Dataset, tokenizer: Any, max_length: int) -> LengthStats:
    """Token lengths as the trainer will see them (chat template applied), and how many exceed max_length."""
    lengths: list[int] = []
    for example in dataset.examples:
        if example.text is not None:
            lengths.append(len(tokenizer(example.text)["input_ids"]))
        else:
            record = example.as_record()["messages"]
            lengths.append(
                len(tokenizer.apply_chat_template(record, tokenize=True, return_dict=True)["input_ids"])
            )
    ordered = sorted(lengths)
    return LengthStats(
        examples=len(lengths),
        min_tokens=ordered[0],
        mean_tokens=round(statistics.fmean(ordered), 1),
        p95_tokens=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        max_tokens=ordered[-1],
        over_max_length=sum(n > max_length for n in lengths),
        max_length=max_length,
    )
