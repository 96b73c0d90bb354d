"""Budget alerts: edge-triggered once per (budget, threshold, month), the highest crossed threshold wins,
re-runs never re-send, a failed send is recorded and retried; delivered to a real receiver on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from blocks.budgets import Budgets
from blocks.rate_card import DEFAULT_RATES
from tasks.alerts import AlertDeliveryError, send_alert
from tasks.billing.budgets import BudgetLine, check_budgets, recorded_alerts
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import rates_from, rollup_days
from tests.standins.receivers import HttpReceiver, http_receiver

RATES = rates_from(DEFAULT_RATES)
MAY = date(2026, 5, 1)
ACME = BudgetLine("acme", None, Decimal("10.00"))


@pytest.fixture
def im() -> Iterator[HttpReceiver]:
    with http_receiver() as receiver:
        yield receiver


def spend(engine: sa.Engine, tmp_path: Path, hours: int, day: int = 2, project: str = "llm") -> None:
    """`hours` A100 GPU-hours for acme (1.40 each), then the rollup of that day."""
    path = tmp_path / f"batch-{len(list(tmp_path.glob('batch-*')))}.jsonl"
    start = len(list(tmp_path.glob("batch-*")))
    records: list[dict[str, Any]] = [
        {
            "source": "test-feed",
            "event_id": f"{path.name}-{h}",
            "customer": "acme",
            "project": project,
            "supplier": "homelab",
            "gpu_type": "a100",
            "gpu_count": 1,
            "start": f"2026-05-{day:02d}T{(start + h) % 24:02d}:00:00Z",
            "end": f"2026-05-{day:02d}T{(start + h) % 24:02d}:59:59.999999+00:00",
        }
        for h in range(hours)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ingest_file(engine, path)
    rollup_days(engine, MAY, date(2026, 5, 31), RATES)


def sender(receiver: HttpReceiver) -> Any:
    return lambda alert: send_alert(
        alert,
        {
            "sms": [f"json://127.0.0.1:{receiver.port}/sms"],
            "im": [f"json://127.0.0.1:{receiver.port}/im"],
            "email": [f"json://127.0.0.1:{receiver.port}/email"],
        },
        attempts=2,
        backoff_s=0,
    )


def statuses(engine: sa.Engine) -> dict[int, str]:
    return {r["threshold"]: r["status"] for r in recorded_alerts(engine, MAY)}


def test_each_threshold_alerts_once_and_reruns_send_nothing(
    engine: sa.Engine, tmp_path: Path, im: HttpReceiver
) -> None:
    spend(engine, tmp_path, 4)  # 5.60 of 10.00: 56 %
    check = lambda: check_budgets(engine, [ACME], [50, 80, 100], MAY, "USD", sender(im))  # noqa: E731
    [info] = check()
    assert (info.threshold, info.status, info.urgency, info.spend) == (50, "sent", "info", Decimal("5.60"))
    assert check() == [] and check() == []
    assert [m["title"] for m in im.received] == ["Budget 50% reached: acme (2026-05)"]  # info → email only
    spend(engine, tmp_path, 4)  # 11.20: past 80 and 100 at once
    decided = check()
    assert [(a.threshold, a.status) for a in decided] == [(80, "suppressed"), (100, "sent")]
    assert check() == []
    assert statuses(engine) == {50: "sent", 80: "suppressed", 100: "sent"}
    titles = [m["title"] for m in im.received]
    assert titles.count("Budget 100% reached: acme (2026-05)") == 2  # critical → SMS + IM
    assert not any("80%" in t for t in titles)
    assert (
        "acme has spent 11.20 USD of its 10.00 USD budget for May 2026 (112.0 %)."
        in im.received[-1]["message"]
    )


def test_a_project_budget_counts_only_its_project(
    engine: sa.Engine, tmp_path: Path, im: HttpReceiver
) -> None:
    spend(engine, tmp_path, 6, project="vision")  # 8.40 on another project
    spend(engine, tmp_path, 1, project="llm")
    llm = BudgetLine("acme", "llm", Decimal("2.00"))
    [alert] = check_budgets(engine, [llm], [50, 80, 100], MAY, "USD", sender(im))
    assert (alert.threshold, alert.spend) == (50, Decimal("1.40"))
    assert recorded_alerts(engine, MAY)[0]["project"] == "llm"


def test_a_failed_send_is_recorded_visible_and_retried(
    engine: sa.Engine, tmp_path: Path, im: HttpReceiver, unused_port: int
) -> None:
    spend(engine, tmp_path, 4)

    def down(alert):
        return send_alert(alert, {"email": [f"json://127.0.0.1:{unused_port}/x"]}, attempts=2, backoff_s=0)  # noqa: E731

    with pytest.raises(AlertDeliveryError, match=r"acme 50%: info alert .* not delivered on email"):
        check_budgets(engine, [ACME], [50, 80, 100], MAY, "USD", down)
    assert statuses(engine) == {50: "failed"}
    [retried] = check_budgets(engine, [ACME], [50, 80, 100], MAY, "USD", sender(im))
    assert (retried.threshold, retried.status) == (50, "sent") and len(im.received) == 1


def test_nothing_is_sent_below_the_first_threshold(
    engine: sa.Engine, tmp_path: Path, im: HttpReceiver
) -> None:
    spend(engine, tmp_path, 3)  # 4.20: 42 %
    assert check_budgets(engine, [ACME], [50, 80, 100], MAY, "USD", sender(im)) == []
    assert im.received == [] and recorded_alerts(engine) == []


def test_the_budgets_block_checks_its_thresholds() -> None:
    assert Budgets().thresholds == [50, 80, 100]
    with pytest.raises(ValueError, match="ascending"):
        Budgets(thresholds=[80, 50])
    with pytest.raises(ValueError):
        Budgets(budgets=[{"customer": "acme", "monthly_amount": "-5"}])


def test_a_project_named_star_and_the_whole_customer_budget_alert_separately(
    engine: sa.Engine, tmp_path: Path, im: HttpReceiver
) -> None:
    spend(engine, tmp_path, 1, project="*")
    whole = BudgetLine("acme", None, Decimal("2.00"))
    star = BudgetLine("acme", "*", Decimal("2.00"))
    first = check_budgets(engine, [whole], [50], MAY, "USD", sender(im))
    second = check_budgets(engine, [star], [50], MAY, "USD", sender(im))
    assert [a.status for a in first] == [a.status for a in second] == ["sent"]
    assert sorted(r["project"] for r in recorded_alerts(engine, MAY)) == ["", "*"]
