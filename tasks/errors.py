"""The platform's error types: each says what failed, where and how to fix it, in one line, no secrets."""

from __future__ import annotations


class GpuflowsError(Exception):
    """Base class: the CLI exits 1 with the message; flows fail with it."""


class InputError(GpuflowsError):
    """The user's input cannot be processed as given (empty prompt, unreadable file, bad option)."""


class PlanningError(GpuflowsError):
    """The prompt cannot be split or synthesised within the configured context."""


class OllamaError(GpuflowsError):
    """Base for failures talking to an Ollama server."""

    #: whether a retry can help (connection trouble, 5xx, server busy); 4xx and bad answers are final
    transient: bool = False


class OllamaUnreachableError(OllamaError):
    transient = True


class OllamaServerError(OllamaError):
    """A 5xx answer, a 503 'server busy', a stream that broke or carried an error line."""

    transient = True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OllamaRequestError(OllamaError):
    """A 4xx answer: the request itself is wrong; retrying cannot help."""


class ModelNotPulledError(OllamaRequestError):
    pass


class TruncatedPromptError(OllamaError):
    """Ollama silently dropped part of the prompt to fit num_ctx."""


class SubTaskFailedError(GpuflowsError):
    """One or more sections failed after their retries; the answer would have silently skipped content."""


class OllamaProtocolError(OllamaError):
    """The server answered something the documented API does not allow (wrong shape, endless line, an
    answer past every bound); retrying the same server is not expected to help."""


class IncompleteAnswerError(OllamaError):
    """The model stopped before its answer was complete (cut at num_predict even after continuing, or an
    empty answer): taking it would silently lose content."""


class RunTimeoutError(GpuflowsError):
    """The whole decomposition did not finish within its deadline (run_timeout_seconds, --timeout)."""
