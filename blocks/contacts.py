"""The directory of recipients: per customer and per supplier, its own Apprise URLs by channel (Secrets) and
what it receives. The operators' AlertRoutes get a copy of every alert; documents go to the owner only."""

from __future__ import annotations

from typing import Literal

import apprise
from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.contacts import CHANNELS, Directory, Recipient

EXAMPLE = (
    '{"customer:acme": {"email": ["mailtos://user:pass@smtp.host?to=a@acme"], '  # pragma: allowlist secret
    '"im": ["slack://…"], "sms": ["twilio://…"]}}'
)
DOCUMENTS = {"customer": ("invoice", "forecast"), "supplier": ("payout", "forecast")}


class Contact(BaseModel):
    """One customer or supplier and what it wants; its addresses are in Contacts.channels (a secret)."""

    kind: Literal["customer", "supplier"]
    id: str = Field(min_length=1, max_length=200, description="The customer or supplier id, as in the ledger")
    documents: list[Literal["invoice", "payout", "forecast"]] = Field(
        default_factory=list,
        description="Emailed to it: a customer's monthly invoice and weekly forecast; a supplier's monthly "
        "payout statement and weekly forecast",
    )
    alerts: bool = Field(True, description="Budget, pace and suspicious-usage alerts about its own usage")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    @model_validator(mode="after")
    def _own_documents(self) -> Contact:
        wrong = sorted(set(self.documents) - set(DOCUMENTS[self.kind]))
        if wrong:
            raise ValueError(
                f"{self.kind} {self.id!r}: a {self.kind} receives {' and '.join(DOCUMENTS[self.kind])}, "
                f"not {', '.join(wrong)}"
            )
        return self


class Contacts(Block):
    """Per customer and supplier: its own alert channels by urgency (critical → SMS + IM, warning → IM +
    email, info → email) and the documents it receives by email. Edited in the UI; never shown in logs or
    artifacts.

    The Apprise URLs are one secret dictionary, keyed `customer:<id>` or `supplier:<id>`, each
    {"sms": [...], "im": [...], "email": [...]}: Prefect 3.8.8 restores secrets nested in a list of models
    by position wrongly (one contact's email URL came back as another's SMS), so none are nested."""

    _block_type_name = "gpuflows Contacts"
    _block_type_slug = "gpuflows-contacts"
    _description = "Each customer's and supplier's own Apprise URLs, and the documents it receives."
    model_config = ConfigDict(hide_input_in_errors=True)  # the URLs carry tokens and addresses

    contacts: list[Contact] = Field(default_factory=list)
    channels: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description=EXAMPLE,
    )

    @model_validator(mode="after")
    def _valid(self) -> Contacts:
        seen: set[str] = set()
        for contact in self.contacts:
            if contact.key in seen:
                raise ValueError(f"{contact.kind} {contact.id!r} is listed twice")
            seen.add(contact.key)
        urls = self.channels.get_secret_value()
        for key, by_channel in urls.items():
            if key not in seen:
                raise ValueError(
                    f"channels for {key!r}, which is not a listed contact (customer:<id> or supplier:<id>)"
                )
            if not isinstance(by_channel, dict) or set(by_channel) - set(CHANNELS):
                raise ValueError(f"{key}: channels are sms, im and email, each a list of Apprise URLs")
            for channel, listed in by_channel.items():
                if not isinstance(listed, list):
                    raise ValueError(f"{key}: {channel} must be a list of Apprise URLs")
                for index, url in enumerate(listed, start=1):
                    if not isinstance(url, str) or apprise.Apprise.instantiate(url) is None:
                        # The URL is a secret: the error names where it is, never what it is.
                        raise ValueError(f"{key}: {channel} URL #{index} is not a valid Apprise URL")
        for contact in self.contacts:
            if contact.documents and not urls.get(contact.key, {}).get("email"):
                raise ValueError(f"{contact.key}: documents are emailed, and it has no email URL")
        return self

    def directory(self, operators: dict[str, list[str]]) -> Directory:
        urls = self.channels.get_secret_value()
        return Directory(
            operators,
            {
                (c.kind, c.id): Recipient(
                    c.kind,
                    c.id,
                    {ch: list(urls.get(c.key, {}).get(ch, [])) for ch in CHANNELS},
                    frozenset(c.documents),
                    c.alerts,
                )
                for c in self.contacts
            },
        )
