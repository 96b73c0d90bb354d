"""Dataset formats and validation: every problem with its file and line, nothing dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import InputError
from tasks.training.data import DatasetError, read_dataset


def write(path: Path, *records: object) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CHAT = [
    {"role": "user", "content": "What is a GPU?"},
    {"role": "assistant", "content": "A parallel processor."},
]


def test_messages_format(tmp_path: Path) -> None:
    data = read_dataset([write(tmp_path / "a.jsonl", {"messages": CHAT}, "", {"messages": CHAT})])
    assert data.format == "messages" and len(data.examples) == 2
    assert data.examples[1].source.endswith("a.jsonl:3")


def test_sharegpt_roles_are_mapped(tmp_path: Path) -> None:
    record = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]}
    data = read_dataset([write(tmp_path / "s.jsonl", record)], role_map={"bot": "assistant"})
    assert data.format == "sharegpt"
    assert data.examples[0].messages == (("user", "hi"), ("assistant", "hello"))


def test_alpaca_joins_instruction_and_input(tmp_path: Path) -> None:
    record = {"instruction": "Translate", "input": "Hallo", "output": "Hello"}
    data = read_dataset([write(tmp_path / "al.jsonl", record)])
    assert data.examples[0].messages == (("user", "Translate\n\nHallo"), ("assistant", "Hello"))


def test_text_format(tmp_path: Path) -> None:
    data = read_dataset([write(tmp_path / "t.jsonl", {"text": "plain pretraining text"})], "text")
    assert data.examples[0].as_record() == {"text": "plain pretraining text"}


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.jsonl",
        {"messages": CHAT},
        '{"messages": [',
        {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"text": "mixed in"},
        {"other": 1},
    )
    with pytest.raises(DatasetError) as info:
        read_dataset([path])
    problems = info.value.problems
    assert problems == [
        f"{path}:2: invalid JSON: Expecting value (column 15)",
        f'{path}:3: turn 1 has role "bot"; expected system/user/assistant '
        "(pass role_map {'bot': 'assistant'})",
        f"{path}:4: turn 1 (user) has an empty or missing 'content'",
        f"{path}:5: no assistant turn to learn from",
        f"{path}:6: a text record in a messages dataset (one format per run)",
        f"{path}:7: 'messages' is missing or not a non-empty list of turns",
    ]
    assert str(info.value).startswith("6 problem(s) in the dataset:")


def test_non_utf8_and_missing_alpaca_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"instruction": "caf\xe9", "output": "x"}\n{"instruction": "", "output": "y"}\n')
    with pytest.raises(DatasetError) as info:
        read_dataset([path], "alpaca")
    assert info.value.problems == [
        f"{path}:1: not UTF-8 (byte 0xe9 at column 21)",
        f"{path}:2: missing or empty 'instruction'",
    ]


def test_an_unreadable_or_empty_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        read_dataset([tmp_path / "absent.jsonl"])
    with pytest.raises(InputError, match="no examples in"):
        read_dataset([write(tmp_path / "empty.jsonl", "")])
