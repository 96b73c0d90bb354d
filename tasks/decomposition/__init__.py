"""Decomposition of very large prompts with a local Ollama: plan, driver, agent, client,
splitting, synthesis."""

from tasks.decomposition.agent import OllamaDecompositionAgent
from tasks.decomposition.plan import AgentConfig, DecompositionResult

__all__ = ["AgentConfig", "DecompositionResult", "OllamaDecompositionAgent"]
