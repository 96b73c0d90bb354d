"""The trainer's child-process helpers: its run file and the metrics it writes as it goes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tasks.training.job import latest_metrics, read_metrics, write_run_config
from tasks.training.trainer import TrainConfig


def config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(
        run_name="r1",
        base_model="tiny-qwen",
        datasets=["chat.jsonl"],
        models_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        checkpoints_dir=tmp_path / "ckpt",
        logs_dir=tmp_path / "logs",
    )


def test_the_run_file_round_trips_the_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    path = write_run_config(cfg)
    assert path.parent == cfg.output_dir
    assert TrainConfig(**yaml.safe_load(path.read_text())) == cfg


def test_metrics_are_read_in_order_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert read_metrics(cfg) == [] and latest_metrics(cfg) is None
    cfg.log_dir.mkdir(parents=True)
    lines = [json.dumps({"step": s, "loss": 2.0 / s}) for s in (1, 2, 3)]
    (cfg.log_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    assert [m["step"] for m in read_metrics(cfg)] == [1, 2, 3]
