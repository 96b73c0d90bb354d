"""`gpuflows up`: the platform on one machine (the embedded default), safe to re-run.

1. a Prefect server on 127.0.0.1 (SQLite under .gpuflows/, or PostgreSQL when GPUFLOWS_DATABASE_URL is set),
   reused if one already answers on the port;
2. work pools: `local` (process) and `rtx5090` (Kubernetes, from k8s/work-pools/rtx5090.json);
3. blocks and the global concurrency limits the flows rely on;
4. demo training volumes (a tiny Qwen2 and a chat dataset) for the local `train` deployment, and a real
   usage slice (Alibaba GenAI LoRA trace) in an empty ledger;
5. every deployment in prefect.yaml (`prefect deploy --all`);
6. a process worker for `local`; Ctrl-C stops what this command started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasks.errors import GpuflowsError

PROJECT_DIR = Path(__file__).resolve().parents[1]
STATE_DIR = PROJECT_DIR / ".gpuflows"
LOCAL_POOL = "local"
GPU_POOL = "rtx5090"


def platform_env(port: int) -> dict[str, str]:
    """The environment every process of the platform shares (server, deploy, worker, flow runs)."""
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", str(STATE_DIR / "prefect"))
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_UI_URL", f"http://127.0.0.1:{port}")
    for name, default in POOL_DEFAULTS.items():
        env.setdefault(name, default)
    env.setdefault("GPUFLOWS_CODE_DIR", str(PROJECT_DIR))
    if url := env.get("GPUFLOWS_DATABASE_URL"):
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = url
    return env


def server_is_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(
    port: int, env: dict[str, str], timeout_s: float = 180, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """`prefect server start` in its own process group; returns once /api/health answers."""
    log_path = log_path or STATE_DIR / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GpuflowsError(
                f"the Prefect server exited with {process.returncode}; see {STATE_DIR / 'server.log'}"
            )
        if server_is_up(port):
            return process
        time.sleep(1)
    process.terminate()
    raise GpuflowsError(f"the Prefect server did not answer on port {port} in {timeout_s:.0f} s")


def ollama_host_from_env(env: dict[str, str]) -> str:
    """OLLAMA_HOST as Ollama itself reads it (it may lack a scheme or be a bind address)."""
    host = env.get("OLLAMA_HOST", "http://127.0.0.1:11434")
    if "://" not in host:
        host = f"http://{host}"
    return host.replace("://0.0.0.0", "://127.0.0.1")


def set_up(env: dict[str, str]) -> list[str]:
    """Pools, blocks and limits, created if missing (an operator's later edits are kept)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from blocks.ollama import OllamaServer
    from tasks.concurrency_limits import ensure_limit

    done: list[str] = []
    gpu_template = json.loads((PROJECT_DIR / "k8s" / "work-pools" / "rtx5090.json").read_text())
    pools = {
        env["GPUFLOWS_PROCESS_POOL"]: ("process", ProcessWorker.get_default_base_job_template(), False),
        env["GPUFLOWS_GPU_POOL"]: ("kubernetes", gpu_template, True),
    }
    with get_client(sync_client=True) as client:
        for name, (kind, template, keep_in_sync) in pools.items():
            try:
                client.read_work_pool(name)
                if keep_in_sync:  # the template is code: the committed file is the truth
                    client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
            done.append(f"work pool {name} ({kind})")
    OllamaServer.register_type_and_schema()
    try:
        server = OllamaServer.load("default")
    except ValueError:
        server = OllamaServer(host=ollama_host_from_env(env))
        server.save("default")
    done.append(f"block gpuflows-ollama-server/default ({server.host})")
    ensure_limit(server.limit_name, server.num_parallel)
    done.append(f"concurrency limit {server.limit_name} = {server.num_parallel}")
    from blocks.ledger import LedgerDatabase

    LedgerDatabase.register_type_and_schema()
    try:
        LedgerDatabase.load("default")
    except ValueError:
        url = env.get("GPUFLOWS_LEDGER_URL") or f"sqlite:///{STATE_DIR / 'ledger.db'}"
        LedgerDatabase(url=url).save("default")
    done.append("block gpuflows-ledger-database/default")
    from blocks.rate_card import RateCard

    RateCard.register_type_and_schema()
    try:
        RateCard.load("default")
    except ValueError:
        RateCard().save("default")
    done.append("block gpuflows-rate-card/default")
    done.append(seed_ledger(LedgerDatabase.load("default").url.get_secret_value()))
    from tasks.demo_volumes import ensure_demo_volumes

    volumes = ensure_demo_volumes(STATE_DIR / "volumes")
    done.append(f"demo training volumes in {volumes.relative_to(PROJECT_DIR)} (tiny-qwen, demo-chat.jsonl)")
    return done


REAL_USAGE_SLICE = PROJECT_DIR / "tests" / "data" / "usage" / "lora_request_trace_slice.csv"


def seed_ledger(url: str) -> str:
    """A small slice of a real usage trace in an empty ledger, so the billing flows have real data to show."""
    import json

    import sqlalchemy as sa

    from tasks.ledger import connect, ingest_file, usage_events
    from tasks.trace_import import lora_trace_events

    engine = connect(url)
    with engine.connect() as connection:
        present = connection.execute(
            sa.select(sa.func.count()).where(usage_events.c.source == "alibaba-genai-lora")
        ).scalar_one()
    if present:
        return f"ledger already holds {present} events of the real usage slice"
    events = STATE_DIR / "lora_request_trace_slice.jsonl"
    events.write_text(
        "".join(json.dumps(e) + "\n" for e in lora_trace_events(REAL_USAGE_SLICE, gpu_type="a10"))
    )
    summary = ingest_file(engine, events, source="alibaba-genai-lora")
    return (
        f"ledger seeded with a real usage slice: {summary.inserted} events, {summary.quarantined} quarantined"
    )


POOL_DEFAULTS = {"GPUFLOWS_PROCESS_POOL": LOCAL_POOL, "GPUFLOWS_GPU_POOL": GPU_POOL}


def deploy(env: dict[str, str]) -> None:
    """`prefect deploy --all` with the pool-name defaults prefect.yaml cannot express itself."""
    env = {**POOL_DEFAULTS, **env}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise GpuflowsError(f"`prefect deploy --all` failed:\n{tail}")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd, a closed terminal) cleans up exactly like Ctrl-C


def run_platform(port: int = 4200, start_worker: bool = True) -> None:
    # Installed explicitly: a process started in the background may inherit SIGINT as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    env = platform_env(port)
    os.environ.update(
        {k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    )
    children: list[subprocess.Popen[bytes]] = []
    if server_is_up(port):
        print(f"Prefect server already running on 127.0.0.1:{port}; reusing it", file=sys.stderr)
    else:
        print(
            f"starting the Prefect server on 127.0.0.1:{port} (log: {STATE_DIR / 'server.log'}) …",
            file=sys.stderr,
        )
        children.append(start_server(port, env))
    try:
        for line in set_up(env):
            print(f"  ✓ {line}", file=sys.stderr)
        deploy(env)
        print("  ✓ deployments from prefect.yaml", file=sys.stderr)
        if start_worker:
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "worker",
                        "start",
                        "--pool",
                        env["GPUFLOWS_PROCESS_POOL"],
                    ],
                    cwd=PROJECT_DIR,
                    env=env,
                    start_new_session=True,
                )
            )
        print(f"\ngpuflows is up. Prefect UI: http://127.0.0.1:{port}", flush=True)
        print(f"CLI against it: export PREFECT_API_URL=http://127.0.0.1:{port}/api", flush=True)
        if not start_worker:
            return
        print("Ctrl-C stops it.", flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(1)
        raise GpuflowsError("a platform process exited; see .gpuflows/server.log and the worker output above")
    except KeyboardInterrupt:
        print("\nstopping …", file=sys.stderr)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
