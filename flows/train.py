"""Flow `train`: QLoRA fine-tuning of a Qwen-family model.

validate inputs on CPU → train (a child process: preemption-safe, resumable) → artifacts.
On the `rtx5090` Kubernetes pool it runs in the trainer image with the four volumes; on the embedded
default it runs on the local process pool with a tiny model, on CPU.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from blocks.ollama import OllamaServer
from flows.audit_hooks import AUDITED
from flows.parameters import BlockName
from flows.resources import ledger_engine, prices
from tasks.billing.ledger import UsageEvent
from tasks.decomposition.ollama import display_host
from tasks.errors import InputError
from tasks.training.job import read_metrics, run_trainer
from tasks.training.publish import model_name, publish_adapter
from tasks.training.trainer import (
    LengthStats,
    TrainConfig,
    TrainingPreempted,
    TrainResult,
    check_training_inputs,
    planned_steps,
)
from tasks.training.usage import record_training_usage, training_event

# Checked at run start against the ledger's list and the rate card (flows/resources.py: Prices.gpu_types).
GpuType = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9-]*$")]


def check_inputs(config: TrainConfig) -> LengthStats:
    _, _, stats = check_training_inputs(config)
    return stats


check_inputs_task = task(check_inputs, name="check-training-inputs", cache_policy=NO_CACHE)


def only_preemption(task: object, task_run: object, state: State) -> bool:
    """Retry a preempted attempt (it resumes from its checkpoint); a bad model path, dataset or config
    fails the same way every time, so it fails at once."""
    return isinstance(state.data, TrainingPreempted)


# A preempted run fails with a saved checkpoint; the retry resumes from it.
@task(
    name="run-trainer",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=60,
    retry_condition_fn=only_preemption,
)
def run_trainer_task(config: TrainConfig, total_steps: int) -> TrainResult:
    progress = create_progress_artifact(0.0, description=f"Training {config.run_name}: steps done")
    logger = get_run_logger()

    def report(metrics: dict[str, object]) -> None:
        step = int(metrics["step"])  # type: ignore[call-overload]
        update_progress_artifact(progress, min(100.0, 100.0 * step / total_steps))
        logger.info(
            "step %s/%s loss %.4f lr %.2e %.0f tokens/s peak %.0f MiB",
            step,
            total_steps,
            metrics["loss"],
            metrics["learning_rate"],
            metrics["tokens_per_second"],
            int(metrics["peak_memory_bytes"]) / 2**20,
        )

    return run_trainer(config, on_progress=report)


@task(name="record-gpu-usage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def record_usage_task(engine: sa.Engine, event: UsageEvent, gpu_types: frozenset[str]) -> None:
    summary = record_training_usage(engine, event, gpu_types)
    logger = get_run_logger()
    if summary.quarantined:  # kept in the ledger's quarantine with its reason; billing must look at it
        logger.error("GPU usage of %s quarantined in the ledger: %s", event.job, summary.reasons)
    else:
        logger.info(
            "GPU usage recorded: %s x %s for %s/%s",
            event.gpu_count,
            event.gpu_type,
            event.customer,
            event.project,
        )


publish_task = task(publish_adapter, name="publish-to-ollama", cache_policy=NO_CACHE)


def result_row(result: TrainResult, config: TrainConfig) -> dict[str, object]:
    """The result table: first, last and eval loss rounded, so progress reads at a glance."""
    losses = [m["loss"] for m in read_metrics(config) if isinstance(m.get("loss"), int | float)]
    rounded = lambda value: None if value is None else round(float(value), 4)  # noqa: E731
    return {
        "run_name": result.run_name,
        "status": result.status,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "first_loss": rounded(losses[0]) if losses else None,
        "last_loss": rounded(losses[-1]) if losses else None,
        "mean_train_loss": rounded(result.train_loss),
        "eval_loss": rounded(result.eval_loss),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "peak_memory_mib": round(result.peak_memory_bytes / 2**20),
        "duration_s": round(result.duration_s, 1),
        "examples": result.examples,
        "adapter_dir": result.adapter_dir,
        "modelfile": result.modelfile,
    }


@flow(
    name="train",
    flow_run_name="train-{config.run_name}",
    validate_parameters=True,
    **AUDITED,
)
def train_model(
    config: TrainConfig,
    customer: Annotated[str, Field(min_length=1, max_length=200)] = "internal",
    project: Annotated[str, Field(min_length=1, max_length=200)] = "training",
    gpu_type: GpuType | None = None,
    gpu_count: Annotated[float, Field(gt=0, le=8)] = 1,
    supplier: Annotated[str, Field(min_length=1, max_length=200)] = "homelab",
    ledger: BlockName = "default",
    rate_card: BlockName = "default",
    publish_to: BlockName | None = None,
    publish_base: Annotated[str, Field(min_length=1, max_length=200)] | None = None,
) -> TrainResult:
    """QLoRA fine-tuning (4-bit NF4, LoRA, TRL SFTTrainer) of a Qwen-family model on one GPU.

    Validates every dataset line before any GPU time, resumes from the newest complete checkpoint of the
    same run_name, exports the adapter (optionally the merged model) and an Ollama Modelfile.

    Args:
        config: Model and dataset paths inside the volumes, LoRA, length, optimisation, eval and export.
        customer: Who the GPU time is billed to.
        project: The customer's project it is billed under.
        gpu_type: The GPU the run holds (the rtx5090 deployment sets it); unset: no GPU, nothing billed.
        gpu_count: GPUs held.
        supplier: Who supplies the GPU.
        ledger: Name of the LedgerDatabase block the usage is written to.
        rate_card: Name of the RateCard block: the GPU type must be one the ledger accepts.
        publish_to: Name of an OllamaServer block: the adapter is uploaded there and a model named after the
            run is created from `publish_base`, so decomposition can use it by name. Unset: not published.
        publish_base: The Ollama model the adapter applies to (default: the block's model).
    """
    if gpu_type is not None:  # resolved once, before any GPU time: an unknown type fails at once
        engine, gpu_types = ledger_engine(ledger), prices(rate_card).gpu_types
        if gpu_type not in gpu_types:
            raise InputError(f"unknown GPU type {gpu_type!r}: known are {', '.join(sorted(gpu_types))}")
    stats = check_inputs_task(config)
    started = datetime.now(UTC)
    try:
        result = run_trainer_task(config, planned_steps(config, stats.examples))
    finally:  # GPU time is billed whether the attempt completed, was preempted or failed
        if gpu_type is not None:
            event = training_event(
                flow_run_id=str(flow_run.get_id()),
                attempt=int(flow_run.get_run_count() or 1),
                run_name=config.run_name,
                customer=customer,
                project=project,
                supplier=supplier,
                gpu_type=gpu_type,
                gpu_count=gpu_count,
                start=started,
                end=datetime.now(UTC),
            )
            record_usage_task(engine, event, gpu_types)
    published = None
    if publish_to is not None and result.adapter_dir is not None:
        server = OllamaServer.load(publish_to)
        published = publish_task(server.host, Path(result.adapter_dir), model_name(config.run_name),
                                 publish_base or server.model)  # fmt: skip
        get_run_logger().info("published to %s as Ollama model %s", display_host(server.host), published)
    create_table_artifact(
        key=f"train-{config.run_name}",
        table=[result_row(result, config) | {"ollama_model": published}],
        description=f"{result.status}: {result.steps} steps, loss {result.train_loss}, "
        f"{result.tokens_per_second} tokens/s; {stats.over_max_length} of {stats.examples} examples over "
        f"max_length {stats.max_length}",
    )
    return result
