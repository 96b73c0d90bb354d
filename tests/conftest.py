"""Shared fixtures. Prefect reads its settings at import, so the environment is isolated first."""

from __future__ import annotations

import os
import tempfile

# A throw-away PREFECT_HOME, analytics off, heartbeats off, and never a user's server.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="gpuflows-tests-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", None)
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from tasks.decomposition.tokens import TokenCounter  # noqa: E402
from tests.standins.ollama import StandinOllama  # noqa: E402

# CI replays a fixed set of examples (a red CI must mean a change broke something); local runs explore.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

MODEL = "qwen2.5:7b-instruct"
THINKING_MODEL = "qwen3:8b"


@pytest.fixture
def ollama() -> Iterator[StandinOllama]:
    """A stand-in Ollama on an ephemeral loopback port, serving MODEL (32k context) and a thinking model."""
    with StandinOllama(
        models={MODEL: 32768, THINKING_MODEL: 40960}, thinking_models=(THINKING_MODEL,)
    ) as server:
        yield server


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return TokenCounter()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a Path
    """Built once per session: models/tiny-qwen under a temporary models volume."""
    from tasks.training.demo_volumes import build_tiny_qwen

    models = tmp_path_factory.mktemp("models")
    build_tiny_qwen(models / "tiny-qwen")
    return models
