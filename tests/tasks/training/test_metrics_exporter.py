"""The metrics sidecar serves valid Prometheus text with the trainer's metrics; no GPU means no GPU series."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tasks.training.metrics_exporter as exporter


def scrape(logs: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    server, _ = exporter.serve(logs, 0, "127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def write_metrics(logs: Path, run: str, *records: dict[str, float]) -> None:
    (logs / run).mkdir(parents=True)
    (logs / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_trainer_metrics_per_run_and_no_gpu_series_without_a_gpu(tmp_path: Path) -> None:
    write_metrics(
        tmp_path,
        "run-a",
        {"step": 1, "loss": 2.5},
        {
            "step": 2,
            "loss": 2.25,
            "learning_rate": 1e-4,
            "tokens_per_second": 812.5,
            "peak_memory_bytes": 3e9,
        },
    )
    write_metrics(tmp_path, "run-b", {"step": 7, "loss": 1.0})
    families = scrape(tmp_path)
    assert families["gpuflows_training_step"] == {(("run", "run-a"),): 2.0, (("run", "run-b"),): 7.0}
    assert families["gpuflows_training_loss"][(("run", "run-a"),)] == 2.25
    assert families["gpuflows_training_tokens_per_second"] == {(("run", "run-a"),): 812.5}
    assert not [name for name in families if name.startswith("gpuflows_gpu_")], "absent, not zero"


def test_gpu_series_when_nvml_reports_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = {
        "gpu": "0",
        "name": "NVIDIA GeForce RTX 5090",
        "utilization": 0.93,
        "memory_used": 29e9,
        "memory_total": 32e9,
        "power_watts": 541.0,
        "temperature": 71.0,
    }
    monkeypatch.setattr(exporter, "gpu_samples", lambda: [sample])
    families = scrape(tmp_path)
    labels = (("gpu", "0"), ("name", "NVIDIA GeForce RTX 5090"))
    assert families["gpuflows_gpu_utilization_ratio"][labels] == 0.93
    assert families["gpuflows_gpu_power_watts"][labels] == 541.0
    assert families["gpuflows_gpu_memory_total_bytes"][labels] == 32e9
