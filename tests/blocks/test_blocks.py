"""Every block's validators: what an operator types in the UI is checked when the block is saved, with a
message that names the problem (and never echoes a Secret)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from blocks.alert_notification import REPEAT_WINDOW_S, RUN_LINE, GpuflowsAlert, first_time
from blocks.alert_routes import AlertRoutes
from blocks.budgets import Budget, Budgets
from blocks.ledger import LedgerDatabase
from blocks.ollama import OllamaServer
from blocks.rate_card import GpuRate, RateCard


def test_ollama_server_wants_a_plain_http_url_and_a_sane_limit() -> None:
    assert OllamaServer(host="http://gpu-box:11434/").host == "http://gpu-box:11434"
    for bad, says in [
        ("gpu-box:11434", r"http\(s\) URL"),
        ("ftp://gpu-box", r"http\(s\) URL"),
        ("http://user:pw@gpu-box:11434", "credentials"),  # pragma: allowlist secret
    ]:
        with pytest.raises(ValidationError, match=says):
            OllamaServer(host=bad)
    for parallel in (0, 65):
        with pytest.raises(ValidationError, match="num_parallel"):
            OllamaServer(num_parallel=parallel)
    assert OllamaServer(host="http://10.0.0.5:11434").limit_name.startswith("ollama-")


def test_ledger_database_takes_sqlite_or_postgresql_and_never_echoes_the_url() -> None:
    assert LedgerDatabase(url="sqlite:////tmp/ledger.db").url.get_secret_value().startswith("sqlite")
    LedgerDatabase(url="postgresql+psycopg://u:p@db/ledger")  # pragma: allowlist secret
    with pytest.raises(ValidationError) as refused:
        LedgerDatabase(url="mysql://billing:hunter22@db/ledger")  # pragma: allowlist secret
    assert "mysql" in str(refused.value) and "hunter22" not in str(refused.value)


def test_rate_card_refuses_overlapping_rates_of_one_gpu_type() -> None:
    first = GpuRate(
        gpu_type="h100", customer_price="2.7", supplier_payout="1.9", effective_to=date(2026, 6, 30)
    )
    later = GpuRate(
        gpu_type="h100", customer_price="2.5", supplier_payout="1.8", effective_from=date(2026, 7, 1)
    )
    assert len(RateCard(rates=[first, later]).rates) == 2
    overlapping = later.model_copy(update={"effective_from": date(2026, 6, 30)})
    with pytest.raises(ValidationError, match="rates for h100 overlap from 2026-06-30"):
        RateCard(rates=[first, overlapping])
    with pytest.raises(ValidationError, match="customer_price"):
        GpuRate(gpu_type="h100", customer_price="-1", supplier_payout="1")
    with pytest.raises(ValidationError, match="currency"):
        RateCard(currency="EURO")


def test_rate_card_gpu_types_are_lowercase_names() -> None:
    assert GpuRate(gpu_type=" B200 ", customer_price="4", supplier_payout="3").gpu_type == "b200"
    with pytest.raises(ValidationError, match="gpu_type"):
        GpuRate(gpu_type="h100; drop", customer_price="1", supplier_payout="1")


def test_budgets_want_ascending_distinct_thresholds_and_positive_amounts() -> None:
    assert Budgets(thresholds=[25, 90, 120]).thresholds == [25, 90, 120]
    for bad in ([], [80, 50], [50, 50], [0, 50], [50, 1001]):
        with pytest.raises(ValidationError, match="thresholds"):
            Budgets(thresholds=bad)
    with pytest.raises(ValidationError, match="monthly_amount"):
        Budget(customer="acme", monthly_amount=Decimal(0))
    with pytest.raises(ValidationError, match="customer"):
        Budget(customer="", monthly_amount=Decimal(10))


def test_alert_routes_keep_urls_secret() -> None:
    url = "twilio://sid:token@+15550001/+15550002"  # pragma: allowlist secret
    routes = AlertRoutes(sms=[url])
    assert "token" not in repr(routes) and "token" not in str(routes.sms)
    assert routes.channels() == {"sms": [url], "im": [], "email": []}


def test_the_alert_block_bounds_its_retries_and_knows_the_run_line() -> None:
    assert GpuflowsAlert().urgency == "critical"
    with pytest.raises(ValidationError, match="urgency"):
        GpuflowsAlert(urgency="loud")
    with pytest.raises(ValidationError, match="attempts"):
        GpuflowsAlert(attempts=0)
    with pytest.raises(ValidationError, match="routes"):
        GpuflowsAlert(routes="")
    body = (
        "train run x ended Crashed: gone\nhttp://ui/runs/1\nFlow run id: 0195f3a2-7c1e-7d2b-8a4b-1234567890ab"
    )
    assert RUN_LINE.search(body).group(1) == "0195f3a2-7c1e-7d2b-8a4b-1234567890ab"


def test_an_alert_delivered_twice_by_the_server_is_handled_once_per_window() -> None:
    """Prefect fires an action again when it evaluates an event twice (at least once): the same alert within
    REPEAT_WINDOW_S is skipped, a different one or the same one after the window is not."""
    body = f"rollup run r ended Failed: boom\nFlow run id: {uuid.uuid4()}"
    assert first_time("critical", "Flow run failed", body, now=1000.0)
    assert not first_time("critical", "Flow run failed", body, now=1000.07)
    assert first_time("warning", "Flow run failed", body, now=1000.1)  # another urgency: another alert
    assert first_time("critical", "Flow run failed", body + "!", now=1000.1)
    assert first_time("critical", "Flow run failed", body, now=1000.0 + REPEAT_WINDOW_S + 1)


TOKEN_URL = "json://127.0.0.1:9/hook/tok-acme-9f8e7d6c5b4a"


def test_contacts_validate_without_echoing_an_address() -> None:
    from blocks.contacts import Contact, Contacts

    ok = Contacts(
        contacts=[
            Contact(kind="customer", id="acme", documents=["invoice"]),
            Contact(kind="supplier", id="dc"),
        ],
        channels={"customer:acme": {"email": ["mailto://u:p@127.0.0.1:2525?from=a@b.test&to=c@d.test"]}},
    )
    people = ok.directory({"im": ["json://127.0.0.1:9/ops"]})
    assert people.find("customer", "acme").channels["email"][0].startswith("mailto://")
    assert people.find("supplier", "dc").channels == {"sms": [], "im": [], "email": []}
    for contacts, channels, says in [
        ([Contact(kind="customer", id="a"), Contact(kind="customer", id="a")], {}, "'a' is listed twice"),
        (
            [Contact(kind="customer", id="a")],
            {"customer:b": {"im": [TOKEN_URL]}},
            "'customer:b', which is not",
        ),
        ([Contact(kind="customer", id="a")], {"customer:a": {"fax": [TOKEN_URL]}}, "sms, im and email"),
        ([Contact(kind="customer", id="a")], {"customer:a": {"im": ["nope://" + TOKEN_URL]}}, "im URL #1"),
        ([Contact(kind="customer", id="a", documents=["invoice"])], {}, "documents are emailed"),
    ]:
        with pytest.raises(ValidationError, match=says) as refused:
            Contacts(contacts=contacts, channels=channels)
        assert "tok-acme" not in str(refused.value)
    with pytest.raises(ValidationError, match="a supplier receives payout and forecast, not invoice"):
        Contact(kind="supplier", id="dc", documents=["invoice"])


def test_a_customers_alert_reaches_its_own_channels_and_the_operators() -> None:
    from tasks.contacts import Directory, Recipient

    people = Directory(
        {"sms": ["ops-sms"], "im": ["ops-im"], "email": ["ops-mail"]},
        {
            ("customer", "acme"): Recipient("customer", "acme", {"im": ["acme-im"], "email": ["acme-mail"]}),
            ("customer", "mute"): Recipient("customer", "mute", {"im": ["mute-im"]}, alerts=False),
        },
    )
    channels, warning = people.alert_channels("warning", "acme")
    assert channels == {"sms": ["ops-sms"], "im": ["ops-im", "acme-im"], "email": ["ops-mail", "acme-mail"]}
    assert warning == ""
    channels, warning = people.alert_channels("critical", "acme")  # SMS + IM: it has IM only
    assert channels["im"] == ["ops-im", "acme-im"] and channels["sms"] == ["ops-sms"] and warning == ""
    assert people.alert_channels("info", "mute") == (
        {"sms": ["ops-sms"], "im": ["ops-im"], "email": ["ops-mail"]},
        "",
    )
    channels, warning = people.alert_channels("info", "stranger")
    assert "acme-im" not in str(channels) and "'stranger' has no contact" in warning
    _, warning = people.alert_channels("critical", "mute")
    assert warning == ""  # it asked for no alerts: not a gap
