"""Alerts through Apprise, routed by urgency; a failure to notify is an error, never swallowed.

critical → SMS + IM, warning → IM + email, info → email. Each channel is tried (with retries and
backoff) even when another fails; then any failure raises, naming the channel, never its URL. Apprise's
own log lines pass through a filter that masks the URLs' secrets (tokens, passwords, query values).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import apprise
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

from tasks.errors import GpuflowsError

Urgency = Literal["critical", "warning", "info"]
ROUTES: dict[str, tuple[str, ...]] = {
    "critical": ("sms", "im"),
    "warning": ("im", "email"),
    "info": ("email",),
}
APPRISE_TYPES = {
    "critical": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "info": apprise.NotifyType.INFO,
}


class AlertDeliveryError(GpuflowsError):
    pass


@dataclass(frozen=True, slots=True)
class Alert:
    urgency: Urgency
    title: str
    body: str
    customer: str | None = None  # whose numbers it tells: that customer hears it too (tasks/contacts.py)


@dataclass(frozen=True, slots=True)
class Delivery:
    channel: str
    delivered: bool
    attempts: int


def secret_parts(url: str) -> set[str]:
    """The parts of an Apprise URL that must not be shown: the URL itself, its password, user, query values
    and long path segments (tokens live there)."""
    parts = urlsplit(url)
    found = {url}
    if parts.password:
        found.add(parts.password)
    if parts.username:
        found.add(parts.username)
    found |= {value for _, value in parse_qsl(parts.query) if len(value) >= 4}
    found |= {segment for segment in parts.path.split("/") if len(segment) >= 8}
    return {s for s in found if s}


class Redact(logging.Filter):
    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        # Longest first, so a URL is masked whole before its parts.
        self.pattern = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.pattern.sub("***", record.getMessage())
        record.args = ()
        return True


@contextmanager
def _redacted(urls: Sequence[str]) -> Iterator[None]:
    """Apprise logs its URLs; urllib3 (under Apprise's HTTP plugins) logs request paths, where tokens live:
    both pass through a filter that masks the URLs' secrets while Apprise works."""
    redact = Redact(set().union(*(secret_parts(u) for u in urls)))
    logs = [logging.getLogger(name) for name in ("apprise", "urllib3.connectionpool")]
    for log in logs:
        log.addFilter(redact)
    try:
        yield
    finally:
        for log in logs:
            log.removeFilter(redact)


def send_alert(
    alert: Alert, channels: Mapping[str, Sequence[str]], attempts: int = 3, backoff_s: float = 2.0
) -> list[Delivery]:
    """Deliver to every channel of the alert's urgency; raise AlertDeliveryError if any failed."""
    routed = [c for c in ROUTES[alert.urgency] if channels.get(c)]
    if not routed:
        raise AlertDeliveryError(
            f"no channel configured for {alert.urgency} alerts ({' or '.join(ROUTES[alert.urgency])}); "
            "add Apprise URLs to the AlertRoutes block"
        )
    with _redacted([u for c in routed for u in channels[c]]):
        deliveries = [_deliver(alert, channel, channels[channel], attempts, backoff_s) for channel in routed]
    failed = [d.channel for d in deliveries if not d.delivered]
    if failed:
        raise AlertDeliveryError(
            f"{alert.urgency} alert {alert.title!r} not delivered on {', '.join(failed)} "
            f"after {attempts} attempts"
        )
    return deliveries


def send_email(
    urls: Sequence[str],
    title: str,
    body: str,
    attachments: Sequence[Path] = (),
    attempts: int = 3,
    backoff_s: float = 2.0,
) -> Delivery:
    """An email (HTML body) with attachments to every URL, retried with backoff; AlertDeliveryError when it
    could not be delivered, naming the attempts, never a URL."""
    if not urls:
        raise AlertDeliveryError("no email URL to send to")
    with _redacted(urls):
        delivery = _deliver(
            Alert("info", title, body), "email", urls, attempts, backoff_s, attachments, html=True
        )
    if not delivery.delivered:
        raise AlertDeliveryError(f"email {title!r} not delivered after {attempts} attempts")
    return delivery


def _deliver(
    alert: Alert,
    channel: str,
    urls: Sequence[str],
    attempts: int,
    backoff_s: float,
    attachments: Sequence[Path] = (),
    html: bool = False,
) -> Delivery:
    notifier = apprise.Apprise()
    for index, url in enumerate(urls, start=1):
        if not notifier.add(url):
            raise AlertDeliveryError(f"{channel} URL #{index} is not a valid Apprise URL")
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=60),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda state: False,
    )
    extra: dict[str, object] = {"body_format": apprise.NotifyFormat.HTML} if html else {}
    if attachments:
        extra["attach"] = apprise.AppriseAttachment([str(p) for p in attachments])
    delivered = retrying(
        notifier.notify,
        title=alert.title,
        body=alert.body,
        notify_type=APPRISE_TYPES[alert.urgency],
        **extra,
    )
    return Delivery(channel, bool(delivered), retrying.statistics.get("attempt_number", 1))
