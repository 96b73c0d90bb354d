"""Configuration blocks. Imported by Prefect through the `prefect.collections` entry point, in the server
too, so every block type here is registered wherever a block document is loaded."""

from blocks.alert_notification import GpuflowsAlert
from blocks.alert_routes import AlertRoutes
from blocks.budgets import Budgets
from blocks.contacts import Contacts
from blocks.ledger import LedgerDatabase
from blocks.ollama import OllamaServer
from blocks.rate_card import RateCard

__all__ = [
    "AlertRoutes",
    "Budgets",
    "Contacts",
    "GpuflowsAlert",
    "LedgerDatabase",
    "OllamaServer",
    "RateCard",
]
