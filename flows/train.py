"""Flow `train`: QLoRA fine-tuning of a Qwen-family model.

validate inputs on CPU → train (a child process: preemption-safe, resumable) → artifacts.
On the `rtx5090` Kubernetes pool it runs in the trainer image with the four volumes; on the embedded
default it runs on the local process pool with a tiny model, on CPU.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from tasks.trainer import LengthStats, TrainConfig, TrainResult, check_training_inputs, planned_steps
from tasks.training_job import run_trainer


def check_inputs(config: TrainConfig) -> LengthStats:
    _, _, stats = check_training_inputs(config)
    return stats


check_inputs_task = task(check_inputs, name="check-training-inputs", cache_policy=NO_CACHE)


@task(name="run-trainer", cache_policy=NO_CACHE)
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


# A preempted run fails with a saved checkpoint; the retry resumes from it.
@flow(
    name="train",
    flow_run_name="train-{config.run_name}",
    retries=3,
    retry_delay_seconds=60,
    validate_parameters=True,
)
def train_model(config: TrainConfig) -> TrainResult:
    """QLoRA fine-tuning (4-bit NF4, LoRA, TRL SFTTrainer) of a Qwen-family model on one GPU.

    Validates every dataset line before any GPU time, resumes from the newest complete checkpoint of the
    same run_name, exports the adapter (optionally the merged model) and an Ollama Modelfile.

    Args:
        config: Model and dataset paths inside the volumes, LoRA, length, optimisation, eval and export.
    """
    stats = check_inputs_task(config)
    result = run_trainer_task(config, planned_steps(config, stats.examples))
    create_table_artifact(
        key=f"train-{config.run_name}",
        table=[result.as_row()],
        description=f"{result.status}: {result.steps} steps, loss {result.train_loss}, "
        f"{result.tokens_per_second} tokens/s; {stats.over_max_length} of {stats.examples} examples over "
        f"max_length {stats.max_length}",
    )
    return result
