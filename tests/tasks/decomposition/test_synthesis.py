"""Aggregation strategies: every request fits, every part is covered, and the depth bound holds."""

from __future__ import annotations

import pytest

from tasks.decomposition.synthesis import Aggregator, choose_strategy
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import PlanningError


def drive(aggregator: Aggregator, answer_words: int = 0) -> tuple[str, list[list[str]]]:
    """Run an aggregation with an 'LLM' that says which parts it covered, so coverage can be checked."""
    batches: list[list[str]] = []
    while batch := aggregator.next_batch():
        batches.append([r.key for r in batch])
        for request in batch:
            assert request.estimate_tokens <= aggregator.budget, f"{request.key} does not fit"
        aggregator.feed([f"covers {r.first}-{r.last}" + " detail" * answer_words for r in batch])
    return aggregator.final.split(" detail")[0], batches


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, "concatenate"),
        (3, "concatenate"),
        (4, "sequential"),
        (10, "sequential"),
        (11, "hierarchical"),
        (40, "hierarchical"),
    ],
)
def test_auto_strategy_by_count(n: int, expected: str) -> None:
    assert choose_strategy(n, "auto") == expected
    assert choose_strategy(n, "sequential") == "sequential"


def test_concatenate_is_one_final_synthesis(counter: TokenCounter) -> None:
    aggregator = Aggregator(
        ["a", "b", "c"], strategy="concatenate", instructions="Sum up.", input_budget=4000, counter=counter
    )
    final, batches = drive(aggregator)
    assert batches == [["L1-G1"]]
    assert final == "covers 1-3"


def test_hierarchical_collapses_in_groups_until_one_root(counter: TokenCounter) -> None:
    answers = [f"Answer {i}: " + "detail " * 150 for i in range(24)]
    aggregator = Aggregator(
        answers,
        strategy="hierarchical",
        instructions="Sum up.",
        input_budget=1200,
        counter=counter,
        max_depth=6,
    )
    final, batches = drive(aggregator)
    assert final == "covers 1-24"
    assert len(batches[0]) > 1 and batches[-1] == [f"L{len(batches)}-G1"]


def test_concatenate_that_does_not_fit_collapses_first(counter: TokenCounter) -> None:
    answers = ["detail " * 700, "detail " * 700, "detail " * 700]
    aggregator = Aggregator(
        answers, strategy="concatenate", instructions="", input_budget=1800, counter=counter
    )
    final, batches = drive(aggregator)
    assert final == "covers 1-3"
    assert len(batches) == 2


def test_sequential_folds_the_running_answer_with_what_fits(counter: TokenCounter) -> None:
    answers = [f"Answer {i}: " + "detail " * 200 for i in range(8)]
    aggregator = Aggregator(
        answers, strategy="sequential", instructions="Sum up.", input_budget=1100, counter=counter
    )
    final, batches = drive(aggregator, answer_words=200)  # a running answer as long as a section's
    assert final == "covers 1-8"
    assert all(len(b) == 1 for b in batches) and len(batches) > 2
    assert batches[0] == ["S1"]


def test_depth_bound_is_a_clear_error(counter: TokenCounter) -> None:
    answers = [f"Answer {i}: " + "detail " * 150 for i in range(30)]
    aggregator = Aggregator(
        answers, strategy="hierarchical", instructions="", input_budget=1200, counter=counter, max_depth=1
    )
    with pytest.raises(PlanningError, match="more than 1 levels"):
        drive(aggregator)


def test_answers_that_cannot_pair_are_a_clear_error(counter: TokenCounter) -> None:
    answers = ["detail " * 600, "detail " * 600]
    aggregator = Aggregator(
        answers, strategy="hierarchical", instructions="", input_budget=900, counter=counter
    )
    with pytest.raises(PlanningError, match="do not fit one synthesis prompt"):
        drive(aggregator)


def test_nothing_to_synthesise_is_an_error(counter: TokenCounter) -> None:
    with pytest.raises(PlanningError, match="no section produced an answer"):
        Aggregator([], strategy="concatenate", instructions="", input_budget=1000, counter=counter)
