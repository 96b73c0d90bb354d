"""`make images`' check of the built images, by starting them as a cluster would:

- flows: its default command (`prefect worker start --pool local`) as its own user (10001), against a real
  Prefect server on the host; a billing-rollup run created through the API must complete in the container,
  its code and blocks taken from the image.
- metrics-exporter: its default command answers on :9400 with the trainer's metric families.

Run by images/build.sh with the project's venv (the server and the API calls) and rootful podman.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FLOWS = os.environ.get("FLOWS_IMAGE", "localhost/gpuflows/flows:0.1.0")
EXPORTER = os.environ.get("EXPORTER_IMAGE", "localhost/gpuflows/metrics-exporter:0.1.0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe, timeout_s: float):  # noqa: ANN001, ANN201 - a small helper
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if found := probe():
                return found
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"images check: {what}: not within {timeout_s:.0f} s")


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise SystemExit(f"images check: podman {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def check_flows(home: Path) -> str:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(home / "server.log", "wb"),  # noqa: SIM115 - lives as long as the server
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    container = "gpuflows-images-check-worker"
    try:
        wait_for("the Prefect server", lambda: urllib.request.urlopen(f"{api}/health", timeout=2), 120)
        os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=env["PREFECT_HOME"])
        run_id = create_run()
        podman("rm", "-f", container, check=False)
        podman(
            "run", "-d", "--name", container, "--network", "host",
            "-e", f"PREFECT_API_URL={api}", "-e", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30",
            FLOWS,
        )  # fmt: skip
        user = podman("exec", container, "id", "-u")
        state = wait_for("the flow run to finish in the container", lambda: finished(run_id), 300)
        if state != "COMPLETED":
            raise SystemExit(
                f"images check: the flow run ended {state}:\n{podman('logs', container)[-3000:]}"
            )
        return f"flows: the worker ran as uid {user} and completed a billing-rollup run from the image"
    finally:
        podman("rm", "-f", container, check=False)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def create_run() -> str:
    """Pool `local`, the blocks a billing rollup loads (a ledger inside the container's /tmp), a deployment
    whose code is the image's /opt/gpuflows, and one run of it."""
    from datetime import date

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from blocks.alert_routes import AlertRoutes
    from blocks.budgets import Budgets
    from blocks.ledger import LedgerDatabase
    from blocks.rate_card import RateCard

    LedgerDatabase(url="sqlite:////tmp/gpuflows/ledger.db").save("default", overwrite=True)
    RateCard().save("default", overwrite=True)
    Budgets().save("default", overwrite=True)
    AlertRoutes().save("default", overwrite=True)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="local", type="process"), overwrite=True)
        flow_id = client.create_flow_from_name("billing-rollup")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="images-check",
            entrypoint="flows/billing_rollup.py:billing_rollup",
            work_pool_name="local",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/gpuflows"}}],
        )
        today = date.today().isoformat()
        run = client.create_flow_run_from_deployment(
            deployment_id,
            parameters={"first_day": today, "last_day": today, "statements_dir": "/tmp/gpuflows/statements"},
        )
        return str(run.id)


def finished(run_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value if state is not None and state.is_final() else None


def check_exporter() -> str:
    container = "gpuflows-images-check-exporter"
    podman("rm", "-f", container, check=False)
    podman("run", "-d", "--name", container, "--network", "host", EXPORTER)
    try:
        body = wait_for(
            "the exporter on :9400",
            lambda: urllib.request.urlopen("http://127.0.0.1:9400/metrics", timeout=2).read().decode(),
            60,
        )
        families = sorted(
            {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE gpuflows")}
        )
        if not families:
            raise SystemExit(f"images check: the exporter answered without gpuflows metrics:\n{body[:500]}")
        user = podman("exec", container, "id", "-u")
        return f"metrics-exporter: uid {user}, :9400 answers with {len(families)} gpuflows metric families"
    finally:
        podman("rm", "-f", container, check=False)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="gpuflows-images-check-") as tmp:
        print(check_flows(Path(tmp)))
    print(check_exporter())
