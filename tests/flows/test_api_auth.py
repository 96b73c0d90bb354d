"""Basic auth on the embedded Prefect server once a password is configured: 401 without it, and every
platform client (CLI, worker, flows) sends it; the health probe stays open, and the string is never logged."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows.bootstrap import platform_env, start_server

AUTH = "operator:c0rrect-h0rse-battery-staple"  # pragma: allowlist secret


def test_the_api_demands_the_configured_credentials(
    tmp_path: Path, unused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.setenv("GPUFLOWS_API_AUTH_STRING", AUTH)
    env = platform_env(unused_port)
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path}/prefect.db"
    log = tmp_path / "server.log"
    server = start_server(unused_port, env, log_path=log)
    api = f"http://127.0.0.1:{unused_port}/api"
    try:
        assert httpx.get(f"{api}/health").status_code == 200  # probes need no credentials
        # Prefect serves its API description without credentials (README, Security): no data, no calls.
        root = f"http://127.0.0.1:{unused_port}"
        schema_pages = {
            path: httpx.get(root + path).status_code for path in ("/docs", "/redoc", "/openapi.json")
        }
        assert schema_pages == {"/docs": 200, "/redoc": 200, "/openapi.json": 200}, schema_pages
        assert httpx.post(f"{api}/flows/filter", json={}).status_code == 401
        wrong = base64.b64encode(b"operator:guess").decode()
        assert (
            httpx.post(
                f"{api}/flows/filter", json={}, headers={"Authorization": f"Basic {wrong}"}
            ).status_code
            == 401
        )
        right = base64.b64encode(AUTH.encode()).decode()
        assert (
            httpx.post(
                f"{api}/flows/filter", json={}, headers={"Authorization": f"Basic {right}"}
            ).status_code
            == 200
        )
        cli = [sys.executable, "-m", "prefect", "--no-prompt", "work-pool", "ls"]
        assert subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120).returncode == 0
        anonymous = {k: v for k, v in env.items() if k != "PREFECT_API_AUTH_STRING"}
        refused = subprocess.run(cli, env=anonymous, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
        assert AUTH not in refused.stdout + refused.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert AUTH.split(":")[1] not in log.read_text()


def test_platform_env_passes_one_password_to_server_and_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLOWS_API_AUTH_STRING", AUTH)
    env = platform_env(4200)
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"] == AUTH
    monkeypatch.delenv("GPUFLOWS_API_AUTH_STRING")
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    assert "PREFECT_SERVER_API_AUTH_STRING" not in platform_env(4200)
