"""The Ollama server a decomposition run talks to, and its share of the host's parallel slots."""

from __future__ import annotations

import re

import httpx
from prefect.blocks.core import Block
from pydantic import Field, field_validator

from tasks.decomposition.ollama import DEFAULT_HOST, DEFAULT_MODEL


def host_limit_name(host: str) -> str:
    """The global concurrency limit shared by every run that calls this host (lowercase-dashes)."""
    url = httpx.URL(host)
    slug = re.sub(r"[^a-z0-9]+", "-", f"{url.host}-{url.port or 11434}".lower()).strip("-")
    return f"ollama-{slug}"


class OllamaServer(Block):
    """An Ollama host: where it is, its default model, and how many requests it runs at once."""

    _block_type_name = "gpuflows Ollama Server"
    _block_type_slug = "gpuflows-ollama-server"
    _description = "An Ollama host for the decomposition flow; num_parallel matches its OLLAMA_NUM_PARALLEL."

    host: str = Field(DEFAULT_HOST, description="Base URL, e.g. http://gpu-box:11434")
    model: str = Field(DEFAULT_MODEL, min_length=1, description="Default model (as in `ollama list`)")
    num_parallel: int = Field(
        3, ge=1, le=64, description="OLLAMA_NUM_PARALLEL of the host: the limit across all runs"
    )

    @field_validator("host")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"host must be an http(s) URL such as {DEFAULT_HOST}, got {value!r}")
        if url.username or url.password:
            raise ValueError("host must not carry credentials; Ollama has no authentication of its own")
        return value.rstrip("/")

    @property
    def limit_name(self) -> str:
        return host_limit_name(self.host)
