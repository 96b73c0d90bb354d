"""What a flow run loads from its blocks, resolved once per run and passed down as ready objects: the ledger
engine (one per URL per process, migrated once: tasks/database.py), prices, budgets and the alert sender. One
place, so every flow opens the ledger and sends alerts the same way, and Secret values never leave here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial

import sqlalchemy as sa

from blocks.alert_routes import AlertRoutes
from blocks.budgets import Budgets
from blocks.contacts import Contacts
from blocks.ledger import LedgerDatabase
from blocks.rate_card import RateCard
from tasks.alerts import Alert, Delivery, send_alert
from tasks.audit import redact
from tasks.billing.budgets import BudgetLine
from tasks.billing.ledger import accepted_gpu_types
from tasks.billing.rollup import Rate, rates_from
from tasks.contacts import Directory
from tasks.database import connect
from tasks.errors import GpuflowsError

Send = Callable[[Alert], list[Delivery]]
People = Callable[[], Directory]


def ledger_engine(block: str) -> sa.Engine:
    """The engine on the (migrated) ledger named by a LedgerDatabase block."""
    return connect(LedgerDatabase.load(block).url.get_secret_value())


@dataclass(frozen=True, slots=True)
class Prices:
    rates: list[Rate]
    currency: str

    @property
    def gpu_types(self) -> frozenset[str]:
        """The GPU types usage may name: the ledger's own list and every type this card prices."""
        return accepted_gpu_types(rate.gpu_type for rate in self.rates)


def prices(block: str) -> Prices:
    card = RateCard.load(block)
    return Prices(rates_from(card.rates), card.currency)


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    lines: list[BudgetLine]
    thresholds: list[int]


def budget_policy(block: str) -> BudgetPolicy:
    policy = Budgets.load(block)
    lines = [BudgetLine(b.customer, b.project, b.monthly_amount) for b in policy.budgets]
    return BudgetPolicy(lines, list(policy.thresholds))


@dataclass(frozen=True, slots=True)
class Billing:
    """Everything the billing and forecast flows need, resolved once at the start of a run."""

    engine: sa.Engine
    prices: Prices
    budgets: BudgetPolicy
    send: Send = field(repr=False)
    people: People = field(repr=False)  # the directory, loaded when first needed, then kept


def billing_resources(
    ledger: str, rate_card: str, budgets: str, alert_routes: str, contacts: str = "default"
) -> Billing:
    engine = ledger_engine(ledger)
    people = cache(partial(directory, alert_routes, contacts))
    return Billing(engine, prices(rate_card), budget_policy(budgets), alert_sender(people), people)


def directory(alert_routes: str, contacts: str) -> Directory:
    """The operators' routing and every customer's and supplier's own (tasks/contacts.py). Without a
    Contacts block, nobody but the operators hears anything: said once, in the run's log."""
    operators = AlertRoutes.load(alert_routes).channels()
    try:
        return Contacts.load(contacts).directory(operators)
    except ValueError:
        run_logger().warning(
            "no Contacts block %r: alerts reach the operators only, and no customer or supplier receives "
            "documents; add one in the UI (gpuflows Contacts)",
            contacts,
        )
        return Directory(operators)


def alert_sender(people: People, attempts: int = 3, backoff_s: float = 2.0) -> Send:
    """Sends an alert to the operators (AlertRoutes block) and, when it is about a customer, to that
    customer's own channels (Contacts block); `people` loads both once, when the first alert is due. A
    customer without a contact is a warning in the run's log, never a silent skip. An alert that could not
    be sent says so in the run's own log (what the UI shows), then the error goes to the caller."""

    def send(alert: Alert) -> list[Delivery]:
        try:
            channels, warning = people().alert_channels(alert.urgency, alert.customer)
            if warning:
                run_logger().warning("%s (%s)", warning, alert.title)
            return send_alert(alert, channels, attempts, backoff_s)
        except Exception as error:
            reason = str(error) if isinstance(error, GpuflowsError) else f"{type(error).__name__}: {error}"
            run_logger().error("ALERT NOT SENT (%s) %r: %s", alert.urgency, alert.title, redact(reason))
            raise

    return send


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger (its lines reach the UI), or a plain one outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("gpuflows.alerts")
