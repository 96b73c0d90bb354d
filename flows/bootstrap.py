"""`gpuflows up`: the platform on one machine (the embedded default), safe to re-run.

1. a Prefect server on 127.0.0.1 (SQLite under .gpuflows/, or PostgreSQL when GPUFLOWS_DATABASE_URL is set),
   reused if one already answers on the port;
2. work pools: `local` (process) and `rtx5090` (Kubernetes, from k8s/work-pools/rtx5090.json);
3. blocks and the global concurrency limits the flows rely on;
4. demo training volumes (a tiny Qwen2 and a chat dataset) for the local `train` deployment, and a real
   usage slice (Alibaba GenAI LoRA trace) in an empty ledger;
5. every deployment in prefect.yaml (`prefect deploy --all`);
6. server-side alerting (flows/automations.py), and every deployment's parameters sealed (an unknown name
   is a 409);
7. a process worker for `local`, unless one is already online; Ctrl-C stops what this command started.

While it runs, it prints every ERROR line the server logs (a scheduler that fails on each tick is loud).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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
    # Flow runs report a heartbeat this often; the zombie automation crashes runs that stop (30 is the least).
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    if url := env.get("GPUFLOWS_DATABASE_URL"):
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = url
    # Basic auth on the API once a password is configured: the server demands it, every client sends it.
    if auth := env.get("GPUFLOWS_API_AUTH_STRING") or env.get("PREFECT_SERVER_API_AUTH_STRING"):
        env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"] = auth
    return env


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "(none: PREFECT_API_URL is unset)")


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
    from flows.concurrency_limits import ensure_limit

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
        for pool, queue, priority, limit in work_queues(env):
            try:
                existing = client.read_work_queue_by_name(queue, work_pool_name=pool)
                client.update_work_queue(existing.id, priority=priority, concurrency_limit=limit)
            except ObjectNotFound:
                client.create_work_queue(
                    queue, work_pool_name=pool, priority=priority, concurrency_limit=limit
                )
            done.append(f"work queue {pool}/{queue} (priority {priority}, limit {limit or 'none'})")
    OllamaServer.register_type_and_schema()
    try:
        server = OllamaServer.load("default")
    except ValueError:
        server = OllamaServer(host=ollama_host_from_env(env))
        server.save("default")
    done.append(f"block gpuflows-ollama-server/default ({server.host})")
    ensure_limit(server.limit_name, server.num_parallel)
    done.append(f"concurrency limit {server.limit_name} = {server.num_parallel}")
    from blocks.alert_routes import AlertRoutes
    from blocks.budgets import Budgets
    from blocks.contacts import Contacts
    from blocks.ledger import LedgerDatabase
    from blocks.rate_card import RateCard

    ledger_url = env.get("GPUFLOWS_LEDGER_URL") or f"sqlite:///{STATE_DIR / 'ledger.db'}"
    for block_class, make in (
        (LedgerDatabase, lambda: LedgerDatabase(url=ledger_url)),
        (RateCard, RateCard),
        (Budgets, Budgets),  # no budgets until an operator adds them in the UI
        (AlertRoutes, AlertRoutes),  # no channels until an operator adds Apprise URLs
        (Contacts, Contacts),  # no customer or supplier contacts until an operator adds them
    ):
        done.append(ensure_block(block_class, make))
    done.append(seed_ledger(LedgerDatabase.load("default").url.get_secret_value()))
    from tasks.training.demo_volumes import ensure_demo_volumes

    volumes = ensure_demo_volumes(STATE_DIR / "volumes")
    done.append(f"demo training volumes in {volumes.relative_to(PROJECT_DIR)} (tiny-qwen, demo-chat.jsonl)")
    return done


def work_queues(env: dict[str, str]) -> list[tuple[str, str, int, int | None]]:
    """(pool, queue, priority, concurrency limit): 1 is served first. Billing is short and about money;
    a decomposition has someone waiting; the forecast and the CPU training demo are batch work. The GPU
    pool runs one training at a time: there is one RTX 5090."""
    process, gpu = env["GPUFLOWS_PROCESS_POOL"], env["GPUFLOWS_GPU_POOL"]
    return [
        (process, "billing", 1, None),
        (process, "decomposition", 2, None),
        (process, "forecast", 3, 1),
        (process, "training", 4, 1),
        (gpu, "training", 1, 1),
    ]


def ensure_block(block_class: Any, make: Any) -> str:
    """The `default` block of a type, created from `make()` unless an operator already has one."""
    block_class.register_type_and_schema()
    try:
        block_class.load("default")
    except ValueError:
        make().save("default")
    return f"block {block_class.get_block_type_slug()}/default"


REAL_USAGE_SLICE = PROJECT_DIR / "tests" / "data" / "usage" / "lora_request_trace_slice.csv"
DEMO_CAPACITY = PROJECT_DIR / "tests" / "data" / "usage" / "demo_capacity.csv"
HELIOS_DIR = PROJECT_DIR / "tests" / "data" / "forecast"
HELIOS_CLUSTERS = ["vc6YE", "vcJLV", "vc8Sj"]


def seed_ledger(url: str) -> str:
    """Small slices of real usage in an empty ledger, so the billing and forecast flows have real data:
    the Alibaba GenAI requests (Nov 2024), three Helios virtual clusters (May 2020), and capacity."""
    import csv
    import json

    import sqlalchemy as sa

    from tasks.billing.capacity import load_capacity, read_capacity
    from tasks.billing.ledger import ingest_file
    from tasks.billing.trace_import import helios_capacity_rows, helios_vc_events, lora_trace_events
    from tasks.database import connect
    from tasks.schema import usage_events

    engine = connect(url)
    with engine.connect() as connection:
        present = connection.execute(
            sa.select(sa.func.count()).where(
                usage_events.c.source.in_(["alibaba-genai-lora", "helios-earth"])
            )
        ).scalar_one()
    if present:
        return f"ledger already holds {present} events of the real usage slices"
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    events = STATE_DIR / "real_usage_slices.jsonl"
    with events.open("w") as handle:
        for event in lora_trace_events(REAL_USAGE_SLICE, gpu_type="a10"):
            handle.write(json.dumps(event) + "\n")
        for cluster in HELIOS_CLUSTERS:
            for event in helios_vc_events(HELIOS_DIR / f"{cluster}_cluster_sequence_vc_slice.csv.gz"):
                handle.write(json.dumps(event) + "\n")
    summary = ingest_file(engine, events, source="real-usage-slices")
    capacity = STATE_DIR / "capacity.csv"
    with capacity.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, ["supplier", "node", "gpu_type", "gpu_count", "valid_from", "valid_to"]
        )
        writer.writeheader()
        writer.writerows(read_rows_of(DEMO_CAPACITY))
        writer.writerows(helios_capacity_rows(HELIOS_DIR / "Earth_gpu_number_2020-05.csv", HELIOS_CLUSTERS))
    nodes = load_capacity(engine, read_capacity(capacity))
    return (
        f"ledger seeded with real usage slices: {summary.inserted} events, "
        f"{summary.quarantined} quarantined; {nodes} capacity rows"
    )


def read_rows_of(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


POOL_DEFAULTS = {"GPUFLOWS_PROCESS_POOL": LOCAL_POOL, "GPUFLOWS_GPU_POOL": GPU_POOL}


def deploy(env: dict[str, str]) -> list[str]:
    """`prefect deploy --all` with the pool-name defaults prefect.yaml cannot express itself; then every
    deployment's parameters sealed and the alerting automations brought up to date."""
    env = {**POOL_DEFAULTS, **env}
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # a refusal (401) is one line, before any work
        client.hello().raise_for_status()
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
    from flows.automations import ensure_automations

    return [*seal_parameters(), *ensure_automations(env)]


def seal_parameters() -> list[str]:
    """Prefect's parameter schemas accept unknown names, and a misspelt one (`first_dya`) then crashes the
    run in its process. Sealed (`additionalProperties: false`), the API answers 409 naming it instead. A
    `gpu_type` parameter is limited to the types the ledger accepts with the `default` rate card (deploy
    again after adding one); the flow checks it against its own rate card as well."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from flows.resources import prices

    names = [d["name"] for d in yaml_deployments()]
    try:
        gpu_types = sorted(prices("default").gpu_types)
    except ValueError:  # no rate card yet: the ledger's own list
        from tasks.billing.ledger import accepted_gpu_types

        gpu_types = sorted(accepted_gpu_types())
    done = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
        ):
            schema = json.loads(json.dumps(deployment.parameter_openapi_schema or {}))
            schema["additionalProperties"] = False
            for branch in schema.get("properties", {}).get("gpu_type", {}).get("anyOf", []):
                if branch.get("type") == "string":
                    branch["enum"] = gpu_types
            if schema != deployment.parameter_openapi_schema:
                client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=schema))
            done.append(f"parameters of {deployment.name} sealed")
    return done


def yaml_deployments() -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())["deployments"]


ERROR_LINE = re.compile(r"\|\s*(ERROR|CRITICAL)\s*\||^\w+(\.\w+)*(Error|Exception): ")


def watch_server_log(path: Path, out: Any = None, stop: threading.Event | None = None) -> threading.Thread:
    """Follows the server log from its current end and prints every ERROR line (and exception line) to
    `out` (stderr), so a service failing in the background is seen, not hidden in a file."""
    out = out or sys.stderr
    stop = stop or threading.Event()

    def follow() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        with path.open("r", encoding="utf-8", errors="replace") as log:
            log.seek(0, os.SEEK_END)
            while not stop.is_set():
                line = log.readline()
                if not line:
                    stop.wait(0.5)
                    continue
                if ERROR_LINE.search(line):
                    print(f"server: {line.rstrip()}", file=out, flush=True)

    thread = threading.Thread(target=follow, name="server-log-watch", daemon=True)
    thread.start()
    return thread


def online_worker(pool: str) -> str | None:
    """The name of a worker of `pool` that the server sees online (a recent heartbeat), if any."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for worker in client.read_workers_for_work_pool(pool):
            if str(getattr(worker.status, "value", worker.status)).upper() == "ONLINE":
                return worker.name
    return None


def alert_routes_warning() -> str | None:
    """A warning while the `default` AlertRoutes block has no URL: failures would reach nobody."""
    from blocks.alert_routes import AlertRoutes

    try:
        channels = AlertRoutes.load("default").channels()
    except ValueError:
        return "no AlertRoutes block 'default': failed runs alert nobody"
    if not any(channels.values()):
        return (
            "the AlertRoutes block 'default' has no Apprise URL: failed runs and budget alerts reach "
            "nobody (UI → Blocks → gpuflows Alert Routes → default: add sms/im/email URLs)"
        )
    return None


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd, a closed terminal) cleans up exactly like Ctrl-C


def run_platform(port: int = 4200, start_worker: bool = True) -> None:
    # Installed explicitly: a process started in the background may inherit SIGINT as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    env = platform_env(port)
    os.environ.update(
        {
            k: env[k]
            for k in (
                "PREFECT_HOME",
                "PREFECT_API_URL",
                "PREFECT_SERVER_ANALYTICS_ENABLED",
                "PREFECT_API_AUTH_STRING",
            )
            if k in env
        }
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
    stop_watch = threading.Event()
    watch_server_log(STATE_DIR / "server.log", stop=stop_watch)
    try:
        for line in set_up(env):
            print(f"  ✓ {line}", file=sys.stderr)
        for line in deploy(env):
            print(f"  ✓ {line}", file=sys.stderr)
        print("  ✓ deployments from prefect.yaml", file=sys.stderr)
        if warning := alert_routes_warning():
            print(f"  ! WARNING: {warning}", file=sys.stderr)
        if start_worker and (running := online_worker(env["GPUFLOWS_PROCESS_POOL"])):
            print(
                f"  ✓ worker {running} is already online for pool {env['GPUFLOWS_PROCESS_POOL']}; "
                "not starting a second one",
                file=sys.stderr,
            )
            start_worker = bool(children)  # keep serving the server this command started
        elif start_worker:
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
        stop_watch.set()
        for child in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
