"""Who hears about whose money: each customer's and supplier's own channels (Apprise URLs by urgency), what
documents each wants, and the operators' routing, which gets a copy of every alert.

A Directory is built once per run from the Contacts and AlertRoutes blocks (flows/resources.py); its URLs are
secrets and never leave it except to Apprise. What the rest of the code sees of a recipient is its id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tasks.alerts import ROUTES, Urgency

Kind = Literal["customer", "supplier"]
Document = Literal["invoice", "payout", "forecast"]
CHANNELS = ("sms", "im", "email")


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: Kind
    id: str  # the customer or supplier id, exactly as the ledger has it
    channels: Mapping[str, Sequence[str]] = field(repr=False)  # channel → Apprise URLs (secrets)
    documents: frozenset[str] = frozenset()  # what is emailed to it: invoice, payout, forecast
    alerts: bool = True  # budget, pace and suspicious-usage alerts about its own usage


@dataclass(frozen=True, slots=True)
class Directory:
    operators: Mapping[str, Sequence[str]] = field(repr=False)
    recipients: Mapping[tuple[str, str], Recipient] = field(default_factory=dict, repr=False)

    def find(self, kind: Kind, owner: str) -> Recipient | None:
        return self.recipients.get((kind, owner))

    def alert_channels(self, urgency: Urgency, customer: str | None) -> tuple[dict[str, list[str]], str]:
        """The channels an alert of `urgency` about `customer` goes to: the operators' and the customer's own
        for that urgency. Also a warning ("" when none) when the customer cannot be reached."""
        merged = {c: list(self.operators.get(c, ())) for c in CHANNELS}
        if customer is None:
            return merged, ""
        own = self.find("customer", customer)
        if own is None:
            return merged, f"customer {customer!r} has no contact: the alert went to the operators only"
        if not own.alerts:
            return merged, ""
        routed = [c for c in ROUTES[urgency] if own.channels.get(c)]
        if not routed:
            return merged, (
                f"customer {customer!r} has no {' or '.join(ROUTES[urgency])} channel for {urgency} alerts: "
                "the alert went to the operators only"
            )
        for channel in routed:
            merged[channel] += list(own.channels[channel])
        return merged, ""

    def wanting(
        self, kind: Kind, document: Document, owners: Sequence[str]
    ) -> tuple[list[Recipient], list[str]]:
        """Of `owners`, the recipients that want `document` by email, and the owners that cannot get it: no
        contact, or a contact that wants it without an email channel. One that does not want it is neither."""
        found: list[Recipient] = []
        missing: list[str] = []
        for owner in owners:
            recipient = self.find(kind, owner)
            if recipient is None or (document in recipient.documents and not recipient.channels.get("email")):
                missing.append(owner)
            elif document in recipient.documents:
                found.append(recipient)
        return found, missing
