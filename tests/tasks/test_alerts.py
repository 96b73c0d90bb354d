"""Apprise alerts to real receivers on loopback: routing by urgency, retries, visible failures, no secrets."""

from __future__ import annotations

import logging

import pytest

from tasks.alerts import Alert, AlertDeliveryError, send_alert
from tests.standins.receivers import http_receiver, smtp_receiver

TOKEN = "tok-9f8e7d6c5b4a"


def test_urgency_routes_to_the_right_channels() -> None:
    with http_receiver() as im, http_receiver() as sms, smtp_receiver() as mail:
        channels = {
            "sms": [f"json://127.0.0.1:{sms.port}/sms/{TOKEN}"],
            "im": [f"json://127.0.0.1:{im.port}/im/{TOKEN}"],
            "email": [
                f"mailto://{mail.user}:{mail.password}@127.0.0.1:{mail.port}?from=billing@gpuflows.local"
                "&to=ops@gpuflows.local&secure=no"
            ],
        }
        send_alert(Alert("critical", "GPU budget exceeded", "acme: 100 % of May"), channels, backoff_s=0)
        assert (
            [m["title"] for m in sms.received] == ["GPU budget exceeded"] == [m["title"] for m in im.received]
        )
        assert sms.received[0]["type"] == "failure" and mail.messages == []
        send_alert(Alert("warning", "Budget at 80 %", "acme: 80 % of May"), channels, backoff_s=0)
        assert len(im.received) == 2 and len(sms.received) == 1
        assert (
            mail.messages[0]["Subject"] == "Budget at 80 %" and mail.messages[0]["To"] == "ops@gpuflows.local"
        )
        send_alert(Alert("info", "Statements ready", "May statements"), channels, backoff_s=0)
        assert len(mail.messages) == 2 and len(im.received) == 2


def test_a_channel_that_is_down_is_retried_then_delivered() -> None:
    with http_receiver() as im:
        im.fail_next = 2
        [delivery] = send_alert(
            Alert("warning", "t", "b"), {"im": [f"json://127.0.0.1:{im.port}/x"]}, attempts=3, backoff_s=0
        )
        assert delivery.delivered and delivery.attempts == 3 and len(im.received) == 1


def test_a_failure_to_notify_is_raised_without_secrets(
    caplog: pytest.LogCaptureFixture, unused_port: int
) -> None:
    with http_receiver() as im:
        channels = {
            "im": [f"json://127.0.0.1:{im.port}/ok"],
            "sms": [f"json://user:{TOKEN}@127.0.0.1:{unused_port}/hook/{TOKEN}?apikey={TOKEN}"],
        }
        with caplog.at_level(logging.DEBUG), pytest.raises(AlertDeliveryError) as info:
            send_alert(Alert("critical", "Budget exceeded", "acme"), channels, attempts=2, backoff_s=0)
        assert str(info.value) == "critical alert 'Budget exceeded' not delivered on sms after 2 attempts"
        assert len(im.received) == 1, "the working channel still delivered"
    assert caplog.records, "apprise logged the failure"
    assert TOKEN not in caplog.text and TOKEN not in str(info.value)


def test_no_configured_channel_is_an_error() -> None:
    with pytest.raises(AlertDeliveryError, match="no channel configured for critical alerts"):
        send_alert(Alert("critical", "t", "b"), {"email": ["mailto://x"]})
