"""QLoRA fine-tuning of a Qwen-family model.

The in-pod entrypoint: `python -m tasks.training.trainer run.yaml`.

Reads top to bottom: config → data (validated on CPU before the model loads) → 4-bit model → LoRA →
SFTTrainer → export. The only module that imports torch.

Preemption: SIGTERM sets a flag; at the end of the current step the trainer saves a checkpoint, marks it
complete and stops (exit code 143), so Prefect/Kubernetes can reschedule. On start, training resumes from
the newest *complete* checkpoint in the run directory; a half-written one (no marker) is ignored.
"""

from __future__ import annotations

import json
import math
import re
import resource
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.errors import GpuflowsError, InputError
from tasks.training.data import Dataset, LengthStats, length_stats, read_dataset

COMPLETE_MARKER = "checkpoint-complete"
QWEN_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


class TrainingPreempted(GpuflowsError):
    """SIGTERM arrived; a complete checkpoint was saved and the next start resumes from it."""


class TrainConfig(BaseModel):
    """One training run. Paths are relative to the four volumes; nothing may escape them."""

    model_config = ConfigDict(extra="forbid")

    run_name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Lowercase-dashes; names the run's folders"
    )
    base_model: str = Field(description="Model folder under models_dir (Hugging Face layout)")
    datasets: list[str] = Field(min_length=1, description="JSONL files under data_dir")
    dataset_format: Literal["auto", "messages", "sharegpt", "alpaca", "text"] = "auto"
    role_map: dict[str, str] = Field(
        default_factory=dict, description='Extra role names, e.g. {"bot": "assistant"}'
    )
    models_dir: Path = Path("/mnt/models")
    data_dir: Path = Path("/mnt/data")
    checkpoints_dir: Path = Path("/mnt/checkpoints")
    logs_dir: Path = Path("/mnt/training-logs")
    # LoRA and quantisation
    lora_r: int = Field(16, ge=1, le=512)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(QWEN_TARGET_MODULES))
    load_in_4bit: bool = Field(True, description="NF4 with double quantisation (QLoRA)")
    gradient_checkpointing: bool = True
    # data shaping
    max_length: int = Field(2048, ge=16, le=131_072)
    packing: bool = False
    assistant_only_loss: bool = Field(True, description="Loss on assistant turns only (chat formats)")
    # optimisation
    learning_rate: float = Field(2e-4, gt=0, le=1)
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1: run num_train_epochs")
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)
    eval_fraction: float = Field(0.05, ge=0, lt=0.5, description="Held-out share of the examples")
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(5, ge=1)
    seed: int = 42
    # export
    export_merged: bool = Field(False, description="Also save the merged model (safetensors)")
    ollama_model_name: str | None = Field(
        None, description="Name for the Ollama Modelfile; default: run_name"
    )

    @field_validator("base_model", "datasets")
    @classmethod
    def _relative(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if Path(item).is_absolute() or ".." in Path(item).parts:
                raise ValueError(f"{item!r} must be a relative path inside its volume")
        return value

    @classmethod
    def from_yaml(cls, path: Path) -> TrainConfig:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"training config {path} cannot be read: {exc}") from None

    @property
    def model_path(self) -> Path:
        return self.models_dir / self.base_model

    @property
    def dataset_paths(self) -> list[Path]:
        return [self.data_dir / name for name in self.datasets]

    @property
    def output_dir(self) -> Path:
        return self.checkpoints_dir / self.run_name

    @property
    def log_dir(self) -> Path:
        return self.logs_dir / self.run_name

    def check_inputs(self) -> None:
        if not (self.model_path / "config.json").is_file():
            raise InputError(
                f"base model {self.model_path} has no config.json (expected a Hugging Face folder)"
            )
        missing = [str(p) for p in self.dataset_paths if not p.is_file()]
        if missing:
            raise InputError(f"dataset file(s) not found: {', '.join(missing)}")


@dataclass(frozen=True, slots=True)
class TrainResult:
    run_name: str
    status: Literal["completed", "preempted"]
    steps: int
    resumed_from_step: int
    train_loss: float | None
    eval_loss: float | None
    tokens_per_second: float
    peak_memory_bytes: int
    duration_s: float
    examples: int
    length: LengthStats
    adapter_dir: str | None
    merged_dir: str | None
    modelfile: str | None

    def as_row(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "length"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "length": LengthStats(**data["length"])})


# ------------------------------------------------------------------------------------------------ checkpoints


def checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint with its completion marker; a half-written one is ignored."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return max(done, key=checkpoint_step) if done else None


# ------------------------------------------------------------------------------------------------ training


class StopFlag:
    """Set by SIGTERM; read by the trainer at the end of each step."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.event.set())


def _callbacks(config: TrainConfig, stop: StopFlag) -> list[Any]:
    from transformers import TrainerCallback

    metrics_file = config.log_dir / "metrics.jsonl"

    class Preemption(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if stop.event.is_set():
                control.should_save = True  # saved at this step's end, within the grace period
                control.should_training_stop = True
            return control

    class MarkComplete(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / COMPLETE_MARKER).write_text(
                    json.dumps({"step": state.global_step, "time": time.time()})
                )
            return control

    class Metrics(TrainerCallback):
        """Step, loss, learning rate, tokens/s, peak memory: a JSON line per log, for the UI and exporter."""

        def __init__(self) -> None:
            self.last: tuple[float, float] | None = None

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> Any:
            if not logs or "loss" not in logs:
                return control
            now, tokens = time.monotonic(), float(logs.get("num_tokens", state.num_input_tokens_seen or 0))
            rate = 0.0
            if self.last is not None and now > self.last[0]:
                rate = (tokens - self.last[1]) / (now - self.last[0])
            self.last = (now, tokens)
            record = {
                "step": state.global_step,
                "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "tokens_per_second": round(rate, 1),
                "peak_memory_bytes": peak_memory_bytes(),
                "num_tokens": tokens,
                "epoch": float(logs.get("epoch", 0.0)),
                "time": time.time(),
            }
            with metrics_file.open("a") as out:
                out.write(json.dumps(record) + "\n")
            return control

    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    tensorboard = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(config.log_dir)))
    return [Preemption(), MarkComplete(), Metrics(), tensorboard]


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def load_tokenizer(model_path: Path) -> Any:
    """The model's tokenizer; Qwen needs a pad token distinct from EOS, or EOS is masked out of the loss."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if "<|endoftext|>" in tokenizer.get_vocab() and tokenizer.eos_token != "<|endoftext|>":
            tokenizer.pad_token = "<|endoftext|>"
        else:
            raise InputError(
                f"tokenizer of {model_path} has no pad token distinct from EOS ({tokenizer.eos_token})"
            )
    return tokenizer


def load_4bit_model(config: TrainConfig) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    on_gpu = torch.cuda.is_available()
    compute = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    quantization = None
    if config.load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    model = AutoModelForCausalLM.from_pretrained(
        config.model_path,
        quantization_config=quantization,
        dtype=compute,
        device_map={"": 0 if on_gpu else "cpu"},
    )
    if not on_gpu:
        keep_4bit_weights_trainable_on_cpu(model)
    return model


def keep_4bit_weights_trainable_on_cpu(model: Any) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights into an inference-only layout at
    the first forward pass without gradients (an evaluation) and keeps them so: the next training step then
    fails in `matmul_4bit` ("a view of a leaf Variable ... in-place operation"). Training alternates with
    evaluation, so the repacking is turned off; GPUs never take that path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def to_datasets(dataset: Dataset, config: TrainConfig) -> tuple[Any, Any | None]:
    from datasets import Dataset as HFDataset

    data = HFDataset.from_list([e.as_record() for e in dataset.examples])
    if config.eval_fraction <= 0 or len(data) < 10:
        return data, None
    split = data.train_test_split(test_size=config.eval_fraction, seed=config.seed)
    return split["train"], split["test"]


def sft_arguments(config: TrainConfig, has_eval: bool, chat: bool) -> Any:
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(config.output_dir),
        report_to=[],  # TensorBoard is attached below, writing to the run's training-logs folder
        max_length=config.max_length,
        packing=config.packing,
        assistant_only_loss=config.assistant_only_loss and chat,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a fraction of the steps
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        logging_steps=config.logging_steps,
        seed=config.seed,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )


def check_training_inputs(config: TrainConfig) -> tuple[Any, Dataset, LengthStats]:
    """Everything that can be checked on CPU before the model loads: paths, every dataset line, lengths."""
    config.check_inputs()
    tokenizer = load_tokenizer(config.model_path)
    dataset = read_dataset(config.dataset_paths, config.dataset_format, config.role_map)
    stats = length_stats(dataset, tokenizer, config.max_length)
    if stats.over_max_length == stats.examples:
        raise InputError(
            f"all {stats.examples} examples are longer than max_length={config.max_length} tokens "
            f"(shortest {stats.min_tokens}, p95 {stats.p95_tokens}); raise max_length"
        )
    return tokenizer, dataset, stats


def planned_steps(config: TrainConfig, examples: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    epochs = math.ceil(config.num_train_epochs)
    return max(1, math.ceil(examples * (1 - config.eval_fraction) / per_step) * epochs)


def train(config: TrainConfig, stop: StopFlag | None = None) -> TrainResult:
    from trl import SFTTrainer

    started = time.monotonic()
    stop = stop or StopFlag()
    tokenizer, dataset, stats = check_training_inputs(config)  # before the model loads
    config.output_dir.mkdir(parents=True, exist_ok=True)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    train_data, eval_data = to_datasets(dataset, config)

    model = load_4bit_model(config)
    trainer = SFTTrainer(
        model=model,
        args=sft_arguments(config, eval_data is not None, chat=dataset.format != "text"),
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=_callbacks(config, stop),
    )
    resume = last_complete_checkpoint(config.output_dir)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    metrics = [
        json.loads(line) for line in (config.log_dir / "metrics.jsonl").read_text().splitlines() if line
    ]
    rates = [m["tokens_per_second"] for m in metrics if m["tokens_per_second"] > 0]
    eval_loss = next((h["eval_loss"] for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    preempted = stop.event.is_set()
    adapter = merged = modelfile = None
    if not preempted:
        adapter, merged, modelfile = export(trainer, tokenizer, config)
    return TrainResult(
        run_name=config.run_name,
        status="preempted" if preempted else "completed",
        steps=trainer.state.global_step,
        resumed_from_step=checkpoint_step(resume) if resume else 0,
        train_loss=float(output.training_loss) if output.training_loss == output.training_loss else None,
        eval_loss=eval_loss,
        tokens_per_second=round(sum(rates) / len(rates), 1) if rates else 0.0,
        peak_memory_bytes=peak_memory_bytes(),
        duration_s=round(time.monotonic() - started, 2),
        examples=len(dataset.examples),
        length=stats,
        adapter_dir=adapter,
        merged_dir=merged,
        modelfile=modelfile,
    )


# ------------------------------------------------------------------------------------------------ export


def export(trainer: Any, tokenizer: Any, config: TrainConfig) -> tuple[str, str | None, str]:
    """The LoRA adapter, optionally the merged model (safetensors), and an Ollama Modelfile."""
    final = config.output_dir / "final"
    adapter = final / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(adapter)
    merged: Path | None = None
    if config.export_merged:
        merged = final / "merged"
        merge_adapter(config.model_path, adapter, merged)
        tokenizer.save_pretrained(merged)
    modelfile = final / "Modelfile"
    source = f"FROM {merged}\n" if merged else f"FROM {config.model_path}\nADAPTER {adapter}\n"
    modelfile.write_text(
        "# ollama create "
        f"{config.ollama_model_name or config.run_name} -f {modelfile}\n"
        f"{source}"
        f'TEMPLATE """{CHATML_TEMPLATE}"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|im_start|>"\n'
        f"PARAMETER num_ctx {config.max_length}\n"
    )
    return str(adapter), str(merged) if merged else None, str(modelfile)


def merge_adapter(model_path: Path, adapter: Path, out: Path) -> None:
    """Merge the adapter into full-precision base weights (a 4-bit base cannot be merged losslessly)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, device_map={"": "cpu"})
    PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(out, safe_serialization=True)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m tasks.training.trainer RUN.yaml", file=sys.stderr)
        return 2
    stop = StopFlag()
    stop.install()
    try:
        result = train(TrainConfig.from_yaml(Path(args[0])), stop)
    except GpuflowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result)), flush=True)
    return 143 if result.status == "preempted" else 0  # 128 + SIGTERM: the pod failed, so it is rescheduled


if __name__ == "__main__":
    sys.exit(main())
