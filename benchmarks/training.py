"""Training throughput: the `train` flow vs a bare TRL SFTTrainer script, same tiny model, data and settings.

Both run on CPU, in the same run, and both are timed the same way: tokens seen between the first and the
last logged step, over the wall time between them (model loading, validation and export excluded). Target:
the flow reaches >= 0.95x the bare script's tokens/s. On the RTX 5090 the numbers would be of another order
(a 7B model in 4-bit at 2k context: roughly 1.5-3k tokens/s); they were not measured here (no GPU).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tasks.training.demo_volumes import ensure_demo_volumes

STEPS = 40
SETTINGS = {
    "max_steps": STEPS,
    "max_length": 128,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_steps": 10_000,
    "eval_fraction": 0.0,
    "lora_r": 16,
    "lora_alpha": 32,
    "seed": 7,
}

# The bare script: what a TRL example does, with the same model, data, quantisation, LoRA and arguments.
BARE = r"""
import json, sys, time
import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
from trl import SFTConfig, SFTTrainer

model_dir, data_file, out, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.float32,
                                             device_map={"": "cpu"})
marks = []
class Mark(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            marks.append((time.monotonic(), float(logs["num_tokens"])))
args = SFTConfig(
    output_dir=out, report_to=[], max_length=settings["max_length"], assistant_only_loss=True,
    learning_rate=settings["learning_rate"], lr_scheduler_type="cosine", warmup_steps=0.03,
    max_steps=settings["max_steps"], per_device_train_batch_size=settings["per_device_train_batch_size"],
    gradient_accumulation_steps=1, gradient_checkpointing=True, logging_steps=1, save_strategy="no",
    seed=settings["seed"], use_cpu=True, bf16=False, disable_tqdm=True,  # TRL defaults to bf16=True
)
modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
lora = LoraConfig(r=settings["lora_r"], lora_alpha=settings["lora_alpha"], lora_dropout=0.05,
                  target_modules=modules, task_type="CAUSAL_LM")
data = load_dataset("json", data_files=data_file)["train"]
trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora,
                     callbacks=[Mark()])
trainer.train()
(t0, n0), (t1, n1) = marks[0], marks[-1]
print("RATE", (n1 - n0) / (t1 - t0))
"""


def flow_rate(volumes: Path, run: str) -> float:
    from prefect.testing.utilities import prefect_test_harness

    from flows.train import train_model
    from tasks.training.trainer import TrainConfig

    config = TrainConfig(
        run_name=run,
        base_model="tiny-qwen",
        datasets=["demo-chat.jsonl"],
        models_dir=volumes / "models",
        data_dir=volumes / "data",
        checkpoints_dir=volumes / "checkpoints",
        logs_dir=volumes / "logs",
        **SETTINGS,
    )
    with prefect_test_harness(server_startup_timeout=180):
        train_model(config)
    marks = [json.loads(x) for x in (config.log_dir / "metrics.jsonl").read_text().splitlines()]
    return (marks[-1]["num_tokens"] - marks[0]["num_tokens"]) / (marks[-1]["time"] - marks[0]["time"])


def bare_rate(volumes: Path, out: Path) -> float:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            BARE,
            str(volumes / "models" / "tiny-qwen"),
            str(volumes / "data" / "demo-chat.jsonl"),
            str(out),
            json.dumps(SETTINGS),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    line = next((x for x in run.stdout.splitlines() if x.startswith("RATE ")), None)
    if line is None:
        raise RuntimeError(run.stderr[-3000:])
    return float(line.split()[1])


def report() -> str:
    root = Path(tempfile.mkdtemp(prefix="gpuflows-bench-train-"))
    volumes = ensure_demo_volumes(root)
    bare, flow = [], []
    for k in range(3):  # interleaved, so drift in machine load hits both alike
        bare.append(bare_rate(volumes, root / f"bare-{k}"))
        flow.append(flow_rate(volumes, f"bench-{k}"))
    b, f = statistics.median(bare), statistics.median(flow)
    return "\n".join(
        [
            f"### Training throughput (tiny Qwen2, NF4 + LoRA r16, CPU, {STEPS} steps, batch 8, median of 3)",
            "",
            "| trainer | tokens/s |",
            "|---|---:|",
            f"| bare TRL SFTTrainer script | {b:,.0f} |",
            f"| gpuflows `train` flow (Prefect, trainer child process) | {f:,.0f} |",
            "",
            f"flow / bare = {f / b:.3f} (target >= 0.95: {'met' if f / b >= 0.95 else 'NOT met'})",
        ]
    )


if __name__ == "__main__":
    print(report())
