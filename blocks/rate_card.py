"""Prices per GPU-hour: what customers pay and suppliers are paid, by GPU type and effective dates."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, field_validator, model_validator


class GpuRate(BaseModel):
    gpu_type: str = Field(description="Lowercase, as in the ledger (rtx5090, h100, …)")

    @field_validator("gpu_type", mode="before")
    @classmethod
    def _gpu_name(cls, value: object) -> object:
        """One spelling everywhere: a type priced here is accepted by the ledger and the train flow."""
        name = str(value).strip().lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,49}", name):
            raise ValueError(f"gpu_type must be a name such as rtx5090 or h100, got {value!r}")
        return name

    customer_price: Decimal = Field(ge=0, description="Per GPU-hour, charged to the customer")
    supplier_payout: Decimal = Field(ge=0, description="Per GPU-hour, paid to the supplier")
    effective_from: date = date(2000, 1, 1)
    effective_to: date | None = Field(None, description="Last day it applies; open-ended when unset")


# Realistic defaults (USD per GPU-hour); payouts at 70 % of the price.
DEFAULT_RATES = [
    GpuRate(gpu_type=gpu, customer_price=Decimal(price), supplier_payout=Decimal(payout))
    for gpu, price, payout in [
        ("rtx4090", "0.50", "0.35"),
        ("rtx5090", "0.80", "0.56"),
        ("a100", "1.40", "0.98"),
        ("h100", "2.70", "1.89"),
        ("l40s", "1.00", "0.70"),
        ("a10", "0.60", "0.42"),
        ("t4", "0.35", "0.245"),
        ("v100", "0.90", "0.63"),
        ("p100", "0.40", "0.28"),
    ]
]


class RateCard(Block):
    """The rate card the billing rollup prices usage with."""

    _block_type_name = "gpuflows Rate Card"
    _block_type_slug = "gpuflows-rate-card"
    _description = "Customer price and supplier payout per GPU-hour, by GPU type and effective dates."

    currency: str = Field("USD", min_length=3, max_length=3)
    rates: list[GpuRate] = Field(default_factory=lambda: list(DEFAULT_RATES))

    @model_validator(mode="after")
    def _no_overlaps(self) -> RateCard:
        by_type: dict[str, list[GpuRate]] = {}
        for rate in self.rates:
            by_type.setdefault(rate.gpu_type, []).append(rate)
        for gpu, rates in by_type.items():
            ordered = sorted(rates, key=lambda r: r.effective_from)
            for a, b in zip(ordered, ordered[1:], strict=False):
                if a.effective_to is None or a.effective_to >= b.effective_from:
                    raise ValueError(f"rates for {gpu} overlap from {b.effective_from}")
        return self
