"""The `train` flow on a real Prefect server: validation first, a real QLoRA run, the result artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from blocks.ledger import LedgerDatabase
from flows.train import train_model
from tasks.database import connect
from tasks.errors import GpuflowsError, InputError
from tasks.schema import usage_events
from tasks.training.data import DatasetError
from tasks.training.trainer import TrainConfig, TrainingPreempted

CHAT = {
    "messages": [
        {"role": "user", "content": "What is a GPU?"},
        {"role": "assistant", "content": "A processor for parallel work."},
    ]
}


def config_for(tmp_path: Path, models: Path, lines: list[str]) -> TrainConfig:
    data = tmp_path / "data"
    data.mkdir()
    (data / "chat.jsonl").write_text("\n".join(lines) + "\n")
    return TrainConfig(
        run_name="flow-run",
        base_model="tiny-qwen",
        datasets=["chat.jsonl"],
        models_dir=models,
        data_dir=data,
        checkpoints_dir=tmp_path / "ckpt",
        logs_dir=tmp_path / "logs",
        max_steps=3,
        max_length=96,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        logging_steps=1,
        eval_fraction=0.0,
        lora_r=8,
        lora_alpha=16,
    )


def test_the_flow_trains_and_leaves_a_result_table(
    tmp_path: Path, tiny_qwen: Path, prefect_server: str
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    LedgerDatabase(url=url).save("train-test", overwrite=True)
    result = train_model(
        config_for(tmp_path, tiny_qwen, [json.dumps(CHAT)] * 16),
        customer="acme",
        project="chatbot",
        gpu_type="rtx5090",
        ledger="train-test",
    )
    assert result.status == "completed" and result.steps == 3
    with connect(url).connect() as connection:
        [usage] = connection.execute(sa.select(usage_events)).all()
    assert (usage.source, usage.customer, usage.project, usage.job, usage.gpu_type) == (
        "gpuflows-train",
        "acme",
        "chatbot",
        "train:flow-run",
        "rtx5090",
    )
    assert usage.event_id.endswith(":1") and 0 < usage.gpu_microseconds < 600 * 10**6
    assert Path(result.adapter_dir, "adapter_model.safetensors").is_file()
    response = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["train-flow-run"]}}, "limit": 1},
    )
    [artifact] = response.json()
    [row] = json.loads(artifact["data"])  # a table artifact's data is the JSON of its rows
    assert artifact["type"] == "table" and row["steps"] == 3 and row["status"] == "completed"
    assert row["first_loss"] > 0 and row["last_loss"] > 0
    assert all(len(str(row[k]).split(".")[-1]) <= 4 for k in ("first_loss", "last_loss", "mean_train_loss"))


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the flow checked its inputs and started the trainer: a failure that would fail the same
    way again must not be retried (a retry waits 60 s and ends the same)."""
    import flows.train

    counts = {"checks": 0, "trainer": 0}

    for name, attribute in (("checks", "check_training_inputs"), ("trainer", "run_trainer")):
        original = getattr(flows.train, attribute)

        def counted(*args: object, _name: str = name, _fn: Any = original, **kwargs: object) -> Any:
            counts[_name] += 1
            return _fn(*args, **kwargs)

        monkeypatch.setattr(flows.train, attribute, counted)
    return counts


def test_a_bad_dataset_fails_at_once_naming_the_line(
    tmp_path: Path, tiny_qwen: Path, attempts: dict[str, int]
) -> None:
    config = config_for(tmp_path, tiny_qwen, [json.dumps(CHAT), "{broken"])
    with pytest.raises(DatasetError, match=r"chat.jsonl:2: invalid JSON"):
        train_model(config)  # the deployment's own settings
    assert attempts == {"checks": 1, "trainer": 0}, "checked once, not retried, no training started"
    assert not (tmp_path / "ckpt" / "flow-run").exists()


def test_a_missing_base_model_fails_at_once(
    tmp_path: Path, tiny_qwen: Path, attempts: dict[str, int]
) -> None:
    config = config_for(tmp_path, tiny_qwen, [json.dumps(CHAT)] * 4).model_copy(
        update={"base_model": "no-such-model"}
    )
    with pytest.raises(Exception, match="no-such-model"):
        train_model(config)
    assert attempts == {"checks": 1, "trainer": 0}


def test_only_preemption_is_retried() -> None:
    from prefect.states import Failed

    from flows.train import only_preemption, run_trainer_task

    assert run_trainer_task.retries == 3
    assert only_preemption(None, None, Failed(data=TrainingPreempted("preempted")))
    assert not only_preemption(None, None, Failed(data=DatasetError("chat.jsonl:2: invalid JSON")))
    assert not only_preemption(None, None, Failed(data=GpuflowsError("training run x failed (exit 1)")))


def test_the_gpu_type_is_checked_against_the_rate_card_before_any_work(
    tmp_path: Path, tiny_qwen: Path
) -> None:
    from blocks.rate_card import DEFAULT_RATES, GpuRate, RateCard

    LedgerDatabase(url=f"sqlite:///{tmp_path}/ledger.db").save("train-gpus", overwrite=True)
    RateCard(
        rates=[*DEFAULT_RATES, GpuRate(gpu_type="b200", customer_price="4.2", supplier_payout="2.9")]
    ).save("with-b200", overwrite=True)
    config = config_for(tmp_path, tiny_qwen, [json.dumps(CHAT), "{broken"])
    with pytest.raises(InputError, match="unknown GPU type 'b200'"):
        train_model(config, gpu_type="b200", ledger="train-gpus")
    # Priced by its rate card, b200 passes; the run goes on to the dataset check, which fails here.
    with pytest.raises(DatasetError, match="chat.jsonl:2"):
        train_model(config, gpu_type="b200", ledger="train-gpus", rate_card="with-b200")


def test_a_trained_adapter_is_published_to_ollama_and_decomposition_uses_it(
    tmp_path: Path, tiny_qwen: Path, prefect_server: str
) -> None:
    """train → publish (blobs, then /api/create from the base) → decompose with the new model by name."""
    from blocks.ollama import OllamaServer
    from flows.decompose import decompose
    from tasks.decomposition.plan import AgentConfig
    from tests.conftest import MODEL
    from tests.standins.ollama import StandinOllama

    with StandinOllama(models={MODEL: 32768}) as ollama:
        OllamaServer(host=ollama.url, model=MODEL).save("publish-test", overwrite=True)
        config = config_for(tmp_path, tiny_qwen, [json.dumps(CHAT)] * 8).model_copy(
            update={"run_name": "acme-chat-v1"}
        )
        result = train_model(config, publish_to="publish-test")
        adapter = Path(result.adapter_dir or "", "adapter_model.safetensors").read_bytes()
        assert ollama.created["acme-chat-v1"]["from"] == MODEL
        digest = ollama.created["acme-chat-v1"]["adapters"]["adapter_model.safetensors"]
        assert ollama.blobs[digest] == adapter  # the bytes the trainer wrote, checked by their digest
        answer = decompose(
            "Say hello.", AgentConfig(ollama_host=ollama.url, ollama_model="acme-chat-v1"), server=None
        )
        assert answer.final_response and {r.body["model"] for r in ollama.chat_requests()} == {"acme-chat-v1"}
    [artifact] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["train-acme-chat-v1"]}}, "limit": 1},
    ).json()
    assert json.loads(artifact["data"])[0]["ollama_model"] == "acme-chat-v1"
