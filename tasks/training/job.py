"""Runs the trainer as a child process and follows it: progress from its metrics, its result or its failure.

A child process, not a thread: the trainer installs its own SIGTERM handler (only a main thread can), and in
the pod `tini -g` delivers the kubelet's SIGTERM to it directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tasks.errors import GpuflowsError
from tasks.training.trainer import TrainConfig, TrainingPreempted, TrainResult

PROJECT_DIR = Path(__file__).resolve().parents[2]


def write_run_config(config: TrainConfig) -> Path:
    config.output_dir.mkdir(parents=True, exist_ok=True)
    path = config.output_dir / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())), encoding="utf-8")
    return path


def read_metrics(config: TrainConfig) -> list[dict[str, object]]:
    """Every metrics line the trainer wrote for this run, oldest first (a torn last line is skipped)."""
    path = config.log_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def latest_metrics(config: TrainConfig) -> dict[str, object] | None:
    path = config.log_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1]) if lines else None


def run_trainer(
    config: TrainConfig,
    on_progress: Callable[[dict[str, object]], None] | None = None,
    poll_s: float = 2.0,
) -> TrainResult:
    """`python -m tasks.training.trainer run.yaml`; raises TrainingPreempted on exit 143, GpuflowsError on
    failure."""
    run_file = write_run_config(config)
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks.training.trainer", str(run_file)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last_step = -1
    while process.poll() is None:
        time.sleep(poll_s)
        metrics = latest_metrics(config)
        if metrics and on_progress and metrics["step"] != last_step:
            last_step = int(metrics["step"])  # type: ignore[call-overload]
            on_progress(metrics)
    out, err = process.communicate()
    if process.returncode == 143:
        raise TrainingPreempted(
            f"training run {config.run_name} was preempted; a complete checkpoint is in {config.output_dir}"
        )
    if process.returncode != 0:
        lines = err.splitlines()
        start = max((k for k, line in enumerate(lines) if line.startswith("error: ")), default=len(lines) - 1)
        reason = "\n".join(lines[start:][:25]).removeprefix("error: ") or "no output"
        raise GpuflowsError(f"training run {config.run_name} failed (exit {process.returncode}): {reason}")
    return TrainResult.from_json(json.loads(out.strip().splitlines()[-1]))
