"""The GPU pod's metrics sidecar: a Prometheus endpoint with NVML GPU series and the trainer's metrics.

`python -m tasks.training.metrics_exporter --port 9400 --logs /mnt/training-logs`

Without a GPU (or driver) the GPU series are absent, not zero: a zero would read as an idle GPU. The
trainer's series come from the last line of each run's metrics.jsonl (written by the trainer on every log).
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TRAINER_SERIES = {
    "step": ("gpuflows_training_step", "Optimizer steps done"),
    "loss": ("gpuflows_training_loss", "Training loss at the last log"),
    "learning_rate": ("gpuflows_training_learning_rate", "Learning rate at the last log"),
    "tokens_per_second": ("gpuflows_training_tokens_per_second", "Training throughput"),
    "peak_memory_bytes": ("gpuflows_training_peak_memory_bytes", "Peak memory of the trainer"),
}


def last_metrics(logs: Path) -> dict[str, dict[str, float]]:
    """{run name: last metrics record} for every run folder under logs."""
    runs: dict[str, dict[str, float]] = {}
    for path in sorted(logs.glob("*/metrics.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            if lines:
                runs[path.parent.name] = json.loads(lines[-1])
        except (OSError, ValueError):
            continue  # a line being written right now; the next scrape reads it whole
    return runs


def gpu_samples() -> list[dict[str, object]]:
    """One dict per GPU from NVML, or [] where there is no driver or GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver: absent series, by design
        return []
    try:
        samples = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            samples.append(
                {
                    "gpu": str(index),
                    "name": str(pynvml.nvmlDeviceGetName(handle)),
                    "utilization": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                    "memory_used": float(memory.used),
                    "memory_total": float(memory.total),
                    "power_watts": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                    "temperature": float(
                        pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
                    ),
                }
            )
        return samples
    finally:
        pynvml.nvmlShutdown()


class TrainingCollector(Collector):
    def __init__(self, logs: Path) -> None:
        self.logs = logs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gpus = gpu_samples()
        if gpus:
            families = {
                "utilization": GaugeMetricFamily(
                    "gpuflows_gpu_utilization_ratio", "GPU busy share, 0-1", labels=["gpu", "name"]
                ),
                "memory_used": GaugeMetricFamily(
                    "gpuflows_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu", "name"]
                ),
                "memory_total": GaugeMetricFamily(
                    "gpuflows_gpu_memory_total_bytes", "GPU memory", labels=["gpu", "name"]
                ),
                "power_watts": GaugeMetricFamily(
                    "gpuflows_gpu_power_watts", "GPU power draw", labels=["gpu", "name"]
                ),
                "temperature": GaugeMetricFamily(
                    "gpuflows_gpu_temperature_celsius", "GPU temperature", labels=["gpu", "name"]
                ),
            }
            for sample in gpus:
                for key, family in families.items():
                    family.add_metric([str(sample["gpu"]), str(sample["name"])], float(sample[key]))  # type: ignore[arg-type]
            yield from families.values()
        runs = last_metrics(self.logs)
        for key, (name, help_text) in TRAINER_SERIES.items():
            family = GaugeMetricFamily(name, help_text, labels=["run"])
            for run, record in runs.items():
                if key in record:
                    family.add_metric([run], float(record[key]))
            yield family


def serve(logs: Path, port: int, address: str = "0.0.0.0") -> tuple[object, threading.Thread]:  # noqa: S104
    registry = CollectorRegistry()
    registry.register(TrainingCollector(logs))
    return start_http_server(port, addr=address, registry=registry)


def main() -> None:
    parser = argparse.ArgumentParser(description="gpuflows metrics exporter (Prometheus)")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--address", default="0.0.0.0")  # noqa: S104 - the pod's own network namespace
    parser.add_argument("--logs", type=Path, default=Path("/mnt/training-logs"))
    args = parser.parse_args()
    serve(args.logs, args.port, args.address)
    threading.Event().wait()


if __name__ == "__main__":
    main()
