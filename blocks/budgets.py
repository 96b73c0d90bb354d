"""Monthly budgets per customer (optionally per project) and the thresholds that raise alerts."""

from __future__ import annotations

from decimal import Decimal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, field_validator


class Budget(BaseModel):
    customer: str = Field(min_length=1)
    project: str | None = Field(None, min_length=1, description="Unset: the customer's whole spend")
    monthly_amount: Decimal = Field(gt=0, description="In the rate card's currency")


class Budgets(Block):
    """Monthly budgets; each threshold (percent of the budget) alerts once per budget and month."""

    _block_type_name = "gpuflows Budgets"
    _block_type_slug = "gpuflows-budgets"
    _description = "Monthly spend budgets per customer or project, with alert thresholds in percent."

    thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100])
    budgets: list[Budget] = Field(default_factory=list)

    @field_validator("thresholds")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        if not value or any(t <= 0 or t > 1000 for t in value) or sorted(set(value)) != value:
            raise ValueError("thresholds must be distinct percentages in (0, 1000], ascending")
        return value
