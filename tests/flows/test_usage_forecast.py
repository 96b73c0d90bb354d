"""The `usage-forecast` flow on a real Prefect server, over a ledger of real Helios usage: scoped reports,
and pace and anomaly alerts that reach a loopback receiver once, never again on re-runs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx

from blocks.alert_routes import AlertRoutes
from blocks.budgets import Budget, Budgets
from blocks.ledger import LedgerDatabase
from blocks.rate_card import RateCard
from flows.usage_forecast import artifact_key, usage_forecast
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import billed_total, rates_from, rollup_days
from tasks.billing.statements import safe_name
from tasks.billing.trace_import import helios_vc_events
from tasks.database import connect
from tasks.forecast.alerts import recorded
from tests.standins.receivers import http_receiver

DATA = Path(__file__).parents[1] / "data" / "forecast"
MAY_24, MAY_25 = datetime(2020, 5, 24, tzinfo=UTC), datetime(2020, 5, 25, tzinfo=UTC)


def load_helios(engine, tmp_path: Path, vc: str) -> None:  # noqa: ANN001 - an Engine
    path = tmp_path / f"{vc}.jsonl"
    events = helios_vc_events(DATA / f"{vc}_cluster_sequence_vc_slice.csv.gz")
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert ingest_file(engine, path).quarantined == 0


def test_forecast_reports_and_alerts_once(tmp_path: Path, prefect_server: str) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = connect(url)
    for vc in ("vcJLV", "vc8Sj"):
        load_helios(engine, tmp_path, vc)
    rollup_days(engine, date(2020, 5, 1), date(2020, 5, 23), rates_from(RateCard().rates))
    spent = billed_total(engine, date(2020, 5, 1), date(2020, 5, 23))  # both customers, V100 at 0.90
    LedgerDatabase(url=url).save("fc-test", overwrite=True)
    RateCard().save("fc-test", overwrite=True)
    # vcJLV's budget: above what it has spent, below where its pace takes it by the end of May.
    jlv_spent = sum((Decimal(str(r.customer_cost)) for r in _customer_days(engine, "vcJLV")), Decimal(0))
    Budgets(budgets=[Budget(customer="vcJLV", monthly_amount=jlv_spent * Decimal("1.1"))]).save(
        "fc-test", overwrite=True
    )
    params = {"ledger": "fc-test", "rate_card": "fc-test", "budgets": "fc-test", "alert_routes": "fc-test"}
    with http_receiver() as receiver:
        AlertRoutes(
            sms=[f"json://127.0.0.1:{receiver.port}/sms"],
            im=[f"json://127.0.0.1:{receiver.port}/im"],
            email=[f"json://127.0.0.1:{receiver.port}/email"],
        ).save("fc-test", overwrite=True)
        first = usage_forecast(as_of=MAY_24, report_customers=5, reports_dir=tmp_path / "r", **params)
        assert first.series == 5 and first.pace_alerts == 1 and first.anomalies == 0
        assert first.models.get("combination", 0) >= 3  # the default method, where a backtest is possible
        pace = [m for m in receiver.received if m["title"].startswith("On pace")]
        assert len(pace) == 2  # warning → IM + email
        assert "At the current rate your budget is reached on 2020-05-" in pace[0]["message"]
        # A burst nobody forecast: 400 extra GPUs for one hour on May 24.
        burst = tmp_path / "burst.jsonl"
        burst.write_text(
            json.dumps(
                {
                    "source": "test-feed",
                    "event_id": "burst",
                    "customer": "vcJLV",
                    "project": "default",
                    "supplier": "sensetime-earth",
                    "gpu_type": "v100",
                    "gpu_count": 400,
                    "start": "2020-05-24T10:00:00Z",
                    "end": "2020-05-24T11:00:00Z",
                }  # fmt: skip
            )
            + "\n"
        )
        ingest_file(engine, burst)
        second = usage_forecast(as_of=MAY_25, report_customers=5, reports_dir=tmp_path / "r", **params)
        anomalies = [m for m in receiver.received if m["title"].startswith("Suspicious")]
        assert second.anomalies >= 1 and second.pace_alerts == 0
        assert "Suspicious GPU usage: vcJLV at 2020-05-24 10:00 UTC" in [m["title"] for m in anomalies]
        burst_alert = next(m for m in anomalies if "10:00" in m["title"])
        assert "vcJLV used 4" in burst_alert["message"] and "99 % band" in burst_alert["message"]
        before = len(receiver.received)
        third = usage_forecast(as_of=MAY_25, report_customers=5, reports_dir=tmp_path / "r", **params)
        assert (third.anomalies, third.pace_alerts, len(receiver.received)) == (0, 0, before)
    assert {r["kind"] for r in recorded(engine)} == {"pace", "anomaly"}
    assert all(r["status"] == "sent" for r in recorded(engine))
    assert spent > 0
    # Scoped reports: vcJLV's files and artifact never mention the other customer.
    own = [(tmp_path / "r" / "customers" / f"forecast-{safe_name('vcJLV')}.{ext}") for ext in ("csv", "png")]
    assert all(p.is_file() and p.stat().st_size > 0 for p in own)
    assert "vc8Sj" not in own[0].read_text() and own[1].read_bytes()[:4] == b"\x89PNG"
    [artifact] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [artifact_key("forecast-customer", "vcJLV")]}}, "limit": 1},
    ).json()
    assert "vcJLV" in artifact["data"] and "vc8Sj" not in artifact["data"]
    assert "](data:image/png;base64,iVBORw0KGgo" in artifact["data"]  # the chart itself, a PNG
    supplier_file = f"supplier-forecast-{safe_name('sensetime-earth')}.csv"
    supplier = (tmp_path / "r" / "suppliers" / supplier_file).read_text()
    assert supplier.splitlines()[0].startswith("supplier,window_hours,allocated_gpu_hours")


def _customer_days(engine, customer: str) -> list:  # noqa: ANN001
    import sqlalchemy as sa

    from tasks.schema import customer_daily

    with engine.connect() as connection:
        return connection.execute(
            sa.select(customer_daily).where(customer_daily.c.customer == customer)
        ).all()


def test_a_window_without_usage_forecasts_nothing_and_says_so(tmp_path: Path, prefect_server: str) -> None:
    """The daily schedule on a ledger whose usage is all older than the window (the demo's slices)."""
    LedgerDatabase(url=f"sqlite:///{tmp_path}/ledger.db").save("fc-empty", overwrite=True)
    RateCard().save("fc-empty", overwrite=True)
    Budgets().save("fc-empty", overwrite=True)
    summary = usage_forecast(
        as_of=datetime(2030, 1, 1, tzinfo=UTC),
        reports_dir=tmp_path / "r",
        ledger="fc-empty",
        rate_card="fc-empty",
        budgets="fc-empty",
        alert_routes="fc-empty",
    )
    assert (summary.series, summary.customer_reports, summary.anomalies) == (0, 0, 0)


def test_a_declared_outage_that_ends_before_it_starts_is_one_clear_error() -> None:
    from prefect.exceptions import ParameterTypeError

    bad = {"start": "2020-05-10T06:00:00Z", "end": "2020-05-10T01:00:00Z"}
    try:
        usage_forecast.validate_parameters({"outages": [bad]})
    except ParameterTypeError as exc:
        assert "an outage must end after it starts: 2020-05-10 06:00 .. 2020-05-10 01:00" in str(exc)
    else:
        raise AssertionError("a backwards outage was accepted")
    ok = usage_forecast.validate_parameters({"outages": [{"start": "2020-05-10T06:00", "end": "2020-05-11"}]})
    assert ok["outages"][0].start == datetime(2020, 5, 10, 6, tzinfo=UTC)


def test_weekly_reports_reach_each_owner_that_asked_once(tmp_path: Path, prefect_server: str) -> None:
    """The weekly schedule (deliver_reports): vcJLV and the supplier get their own report by email, with
    its chart and table and nothing of the other customer's; vc8Sj has no contact: a warning and an
    artifact row; a second run the same week sends nothing."""
    from blocks.contacts import Contact, Contacts
    from tests.flows.test_deliver_statements import texts
    from tests.standins.receivers import smtp_receiver

    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = connect(url)
    for vc in ("vcJLV", "vc8Sj"):
        load_helios(engine, tmp_path, vc)
    LedgerDatabase(url=url).save("fc-weekly", overwrite=True)
    Budgets().save("fc-weekly", overwrite=True)
    AlertRoutes().save("fc-weekly", overwrite=True)
    params = {
        "ledger": "fc-weekly",
        "rate_card": "default",
        "budgets": "fc-weekly",
        "alert_routes": "fc-weekly",
    }
    with smtp_receiver() as mail:
        box = f"mailto://{mail.user}:{mail.password}@127.0.0.1:{mail.port}?from=f@gpuflows.test&mode=insecure"
        Contacts(
            contacts=[
                Contact(kind="customer", id="vcJLV", documents=["forecast"]),
                Contact(kind="supplier", id="sensetime-earth", documents=["forecast"]),
            ],
            channels={
                "customer:vcJLV": {"email": [f"{box}&to=jlv@owners.test"]},
                "supplier:sensetime-earth": {"email": [f"{box}&to=earth@owners.test"]},
            },
        ).save("fc-weekly", overwrite=True)
        run = {**params, "contacts": "fc-weekly", "reports_dir": tmp_path / "r", "deliver_reports": True}
        first = usage_forecast(as_of=MAY_24, **run)
        assert first.reports_delivered == 2 and len(mail.messages) == 2
        again = usage_forecast(as_of=datetime(2020, 5, 24, 6, tzinfo=UTC), **run)  # the same ISO week
        assert again.reports_delivered == 0 and len(mail.messages) == 2
    by_to = {m["To"]: m for m in mail.messages}
    body, files = texts(by_to["jlv@owners.test"])
    assert by_to["jlv@owners.test"]["Subject"] == "GPU usage forecast, week 2020-W21: vcJLV"
    assert sorted(name.rsplit(".", 1)[1] for name, _ in files) == ["csv", "png"]
    assert "projected month end" in body and "vc8Sj" not in body
    assert all("vc8Sj" not in text for name, text in files if name.endswith(".csv"))
    body, files = texts(by_to["earth@owners.test"])
    assert "Supplier outlook: sensetime-earth" in body and "vcJLV" not in body and "vc8Sj" not in body
    [artifact] = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["deliveries-forecast"]}}, "sort": "CREATED_DESC", "limit": 1},
    ).json()
    assert "customer vc8Sj" in artifact["data"] and "no contact" in artifact["data"]
    assert "owners.test" not in artifact["data"] and mail.password not in artifact["data"]
