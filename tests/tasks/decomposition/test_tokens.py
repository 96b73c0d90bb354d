from tasks.decomposition.tokens import TokenCounter, get_encoding


def test_counts_special_token_strings_as_plain_text(counter: TokenCounter) -> None:
    # `encode` would raise on "<|endoftext|>"; user documents may contain it.
    text = "before <|endoftext|> after <|fim_prefix|>"
    assert counter.count(text) == len(get_encoding().encode_ordinary(text))
    assert counter.count(text) > 5


def test_encoding_is_cl100k_without_network() -> None:
    # Known cl100k_base ids: "hello world" -> [15339, 1917]
    assert get_encoding().encode_ordinary("hello world") == [15339, 1917]


def test_cache_hits_on_same_content_and_evicts_least_recent() -> None:
    counter = TokenCounter(cache_size=2, min_cached_chars=1)
    a, b, c = "alpha " * 50, "beta " * 50, "gamma " * 50
    n = counter.count(a)
    assert counter.count(a) == n
    assert (counter.hits, counter.misses) == (1, 1)
    counter.count(b)
    counter.count(c)  # evicts a
    counter.count(a)
    assert counter.misses == 4


def test_disabled_cache_never_hits() -> None:
    counter = TokenCounter(enabled=False)
    text = "x " * 1000
    assert counter.count(text) == counter.count(text)
    assert counter.hits == 0


def test_count_many_matches_count_on_both_threads(counter: TokenCounter) -> None:
    texts = [f"paragraph {i} " + "word " * (i % 50) for i in range(400)] + ["z" * 40_000]
    assert counter.count_many(texts) == [len(get_encoding().encode_ordinary(t)) for t in texts]
