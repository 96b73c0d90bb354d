"""Training publishes its adapter to Ollama, so the decomposition flow can use the fine-tuned model by name:
each adapter file goes up as a blob (`/api/blobs/:digest`, skipped when the server has it), then
`/api/create` makes `<name>` from the base model with the adapter. Nobody logs in to the GPU host."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tasks.decomposition.ollama import OllamaClient
from tasks.errors import InputError

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def model_name(run_name: str) -> str:
    """An Ollama model name from a run name: lowercase letters, digits, '.', '_' and '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-._")
    if not name:
        raise InputError(f"run name {run_name!r} gives no usable Ollama model name")
    return name[:100]


def publish_adapter(host: str, adapter_dir: Path, name: str, base: str) -> str:
    """Uploads the adapter and creates `name` on the Ollama at `host`; returns the model name."""
    files = [adapter_dir / f for f in ADAPTER_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"no adapter to publish: {', '.join(missing)} missing")

    async def run() -> None:
        async with OllamaClient(host) as client:
            adapters = {f.name: await client.push_blob(f.read_bytes()) for f in files}
            await client.create_model(name, base, adapters)

    asyncio.run(run())
    return name
