"""The metrics exporter scraped by a real Prometheus on loopback: `promtool check metrics` accepts its
output, and the training series are queried back through Prometheus's HTTP API while a run writes new
steps. Runs where Prometheus is installed (`.ci/run` installs Debian's package); skipped elsewhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason="Prometheus is not installed")


def log_step(logs: Path, run: str, step: int) -> None:
    (logs / run).mkdir(parents=True, exist_ok=True)
    record = {"step": step, "loss": 2.0 / step, "learning_rate": 2e-4, "tokens_per_second": 512.0,
              "peak_memory_bytes": 3 * 2**30}  # fmt: skip
    with (logs / run / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def wait_for(probe, timeout_s: float = 60):  # noqa: ANN001, ANN201 - a tiny poll
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (found := probe()) is not None:
                return found
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    logs, exporter_port, prometheus_port = tmp_path / "logs", free_port(), free_port()
    log_step(logs, "qwen-chat", 1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: gpuflows-trainer\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    exporter = subprocess.Popen(
        [sys.executable, "-m", "tasks.training.metrics_exporter", "--address", "127.0.0.1",
         "--port", str(exporter_port), "--logs", str(logs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    prometheus = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield logs, f"http://127.0.0.1:{exporter_port}/metrics", f"http://127.0.0.1:{prometheus_port}"
    finally:
        for process in (prometheus, exporter):
            process.terminate()
            process.wait(30)


def test_prometheus_scrapes_the_training_series(stack: tuple[Path, str, str]) -> None:
    logs, metrics, prometheus = stack
    text = wait_for(lambda: httpx.get(metrics, timeout=2).text)
    checked = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def step() -> float | None:
        answer = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": "gpuflows_training_step"}, timeout=2
        )
        result = answer.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    assert wait_for(step) == 1.0
    log_step(logs, "qwen-chat", 7)  # the trainer goes on; the next scrapes see it
    assert wait_for(lambda: step() if step() == 7.0 else None) == 7.0
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "gpuflows_training_loss"}, timeout=2)
    [series] = answer.json()["data"]["result"]
    assert series["metric"]["run"] == "qwen-chat" and series["metric"]["job"] == "gpuflows-trainer"
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
