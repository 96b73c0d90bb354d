"""The QLoRA trainer on a tiny random Qwen2, on CPU: real 4-bit NF4, real LoRA, real SFTTrainer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tasks.errors import InputError
from tasks.training.trainer import (
    COMPLETE_MARKER,
    TrainConfig,
    last_complete_checkpoint,
    load_4bit_model,
    train,
)

ROOT = Path(__file__).resolve().parents[3]
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a GPU?"},
        {"role": "assistant", "content": "A processor for parallel work."},
    ]
}
RECORDS = {
    "messages": CHAT,
    "sharegpt": {
        "conversations": [
            {"from": "human", "value": "Name a volume."},
            {"from": "gpt", "value": "The checkpoints volume."},
        ]
    },
    "alpaca": {
        "instruction": "Say what QLoRA is.",
        "input": "",
        "output": "Low-rank adapters on a 4-bit base.",
    },
    "text": {"text": "Checkpoints, adapters and datasets live on persistent volumes."},
}


def volumes(tmp_path: Path, models: Path, fmt: str = "messages", count: int = 24) -> dict[str, object]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text("\n".join(json.dumps(RECORDS[fmt]) for _ in range(count)) + "\n")
    return {
        "run_name": "tiny-run",
        "base_model": "tiny-qwen",
        "datasets": ["train.jsonl"],
        "models_dir": models,
        "data_dir": data,
        "checkpoints_dir": tmp_path / "checkpoints",
        "logs_dir": tmp_path / "logs",
        "max_length": 96,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 1000,
        "eval_steps": 2,
        "max_steps": 4,
        "lora_r": 8,
        "lora_alpha": 16,
    }


def test_qlora_trains_exports_and_the_adapter_loads(tmp_path: Path, tiny_qwen: Path) -> None:
    config = TrainConfig(**volumes(tmp_path, tiny_qwen), export_merged=True)
    result = train(config)
    assert result.status == "completed" and result.steps == 4 and result.resumed_from_step == 0
    assert result.train_loss is not None and result.train_loss > 0
    assert result.eval_loss is not None  # 24 examples: a 5 % eval split exists
    assert result.tokens_per_second > 0 and result.peak_memory_bytes > 0
    metrics = [json.loads(x) for x in (config.log_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert list(config.log_dir.glob("**/events.out.tfevents.*")), "TensorBoard logs"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_qwen / "tiny-qwen")
    adapted = PeftModel.from_pretrained(base, result.adapter_dir)
    assert adapted.peft_config["default"].r == 8
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert merged.config.model_type == "qwen2"
    modelfile = Path(result.modelfile).read_text()
    assert f"FROM {result.merged_dir}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_the_base_really_is_4bit_nf4(tmp_path: Path, tiny_qwen: Path) -> None:
    import bitsandbytes as bnb

    model = load_4bit_model(TrainConfig(**volumes(tmp_path, tiny_qwen)))
    layer = model.model.layers[0].mlp.up_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.quant_type == "nf4" and layer.weight.quant_state.nested  # double quantisation
    # An evaluation pass must not repack the weights into bitsandbytes' inference-only CPU layout: training
    # resumes after it (the failure shows on CPUs with AVX512-BF16 only).
    import torch

    with torch.no_grad():
        model.eval()(torch.tensor([[1, 2, 3]]))
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)


@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca", "text"])
def test_each_dataset_format_trains(tmp_path: Path, tiny_qwen: Path, fmt: str) -> None:
    result = train(TrainConfig(**{**volumes(tmp_path, tiny_qwen, fmt), "max_steps": 2}))
    assert result.status == "completed" and result.steps == 2 and result.examples == 24


def test_examples_over_max_length_are_counted(tmp_path: Path, tiny_qwen: Path) -> None:
    from tasks.training.data import Dataset, Example, length_stats
    from tasks.training.trainer import load_tokenizer

    short = Example("a:1", messages=(("user", "hi"), ("assistant", "hello")))
    long = Example("a:2", messages=(("user", "GPU " * 200), ("assistant", "ok")))
    stats = length_stats(
        Dataset("messages", [short, long, short]), load_tokenizer(tiny_qwen / "tiny-qwen"), 64
    )
    assert (stats.examples, stats.over_max_length) == (3, 1) and stats.max_tokens > 64 > stats.min_tokens


def test_nothing_learnable_within_max_length_is_a_clear_error(tmp_path: Path, tiny_qwen: Path) -> None:
    with pytest.raises(InputError, match="all 24 examples are longer than max_length=16 tokens"):
        train(TrainConfig(**{**volumes(tmp_path, tiny_qwen), "max_length": 16, "max_steps": 1}))


def test_a_sigterm_saves_a_checkpoint_and_the_next_start_resumes(tmp_path: Path, tiny_qwen: Path) -> None:
    settings = {**volumes(tmp_path, tiny_qwen, count=64), "max_steps": 400, "eval_fraction": 0.0}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(json.loads(json.dumps(settings, default=str))))
    metrics = tmp_path / "logs" / "tiny-run" / "metrics.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks.training.trainer", str(config_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    first = json.loads(out.strip().splitlines()[-1])
    assert first["status"] == "preempted" and 3 <= first["steps"] < 400
    saved = last_complete_checkpoint(tmp_path / "checkpoints" / "tiny-run")
    assert saved is not None and saved.name == f"checkpoint-{first['steps']}"
    # A later, half-written checkpoint (no completion marker) must be ignored.
    (tmp_path / "checkpoints" / "tiny-run" / "checkpoint-399").mkdir()
    resumed = train(TrainConfig(**{**settings, "max_steps": first["steps"] + 3}))
    assert resumed.resumed_from_step == first["steps"]
    assert resumed.steps == first["steps"] + 3 and resumed.status == "completed"
    assert (saved / COMPLETE_MARKER).is_file()


def test_config_rejects_paths_outside_the_volumes_and_missing_inputs(tmp_path: Path, tiny_qwen: Path) -> None:
    with pytest.raises(ValidationError, match="relative path inside its volume"):
        TrainConfig(**{**volumes(tmp_path, tiny_qwen), "datasets": ["../etc/passwd"]})
    with pytest.raises(ValidationError):
        TrainConfig(**{**volumes(tmp_path, tiny_qwen), "run_name": "Bad Name"})
    with pytest.raises(InputError, match="has no config.json"):
        train(TrainConfig(**{**volumes(tmp_path, tiny_qwen), "base_model": "absent"}))
