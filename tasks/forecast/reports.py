"""Forecast reports: per customer (only its own data) and per supplier (only its own nodes), as CSV, a PNG
chart and Markdown for the Prefect UI."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from tasks.billing.statements import safe_name
from tasks.forecast.models import SeriesForecast


@dataclass(frozen=True, slots=True)
class CustomerOutlook:
    customer: str
    history_start: datetime
    history: np.ndarray  # GPU-hours per hour
    forecast: SeriesForecast
    forecast_start: datetime
    price_per_gpu_hour: Decimal  # blended from the rate card by the customer's GPU mix
    month_to_date: Decimal
    projected_month_end: Decimal
    budget: Decimal | None
    currency: str


@dataclass(frozen=True, slots=True)
class SupplierOutlook:
    supplier: str
    window_hours: int
    allocated_gpu_hours: float
    capacity_gpu_hours: float | None
    forecast: SeriesForecast
    forecast_start: datetime
    payout_per_gpu_hour: Decimal
    currency: str

    @property
    def horizon(self) -> int:
        return self.forecast.horizon

    @property
    def utilisation(self) -> float | None:
        return None if not self.capacity_gpu_hours else self.allocated_gpu_hours / self.capacity_gpu_hours

    @property
    def forecast_gpu_hours(self) -> float:
        return self.forecast.total()

    @property
    def projected_payout(self) -> Decimal:
        return (Decimal(str(self.forecast_gpu_hours)) * self.payout_per_gpu_hour).quantize(Decimal("0.01"))


def customer_csv(outlook: CustomerOutlook, out_dir: Path, show_hours: int = 7 * 24) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"forecast-{safe_name(outlook.customer)}.csv"
    fc = outlook.forecast.forecast
    price = float(outlook.price_per_gpu_hour)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "customer",
                "hour",
                "kind",
                "gpu_hours",
                "lower80",
                "upper80",
                "lower95",
                "upper95",
                "cost",
                "currency",
            ]
        )
        shown = outlook.history[-show_hours:]
        first = outlook.history_start + timedelta(hours=len(outlook.history) - len(shown))
        for i, value in enumerate(shown):
            hour = first + timedelta(hours=i)
            writer.writerow(
                [
                    outlook.customer,
                    hour.isoformat(),
                    "history",
                    f"{value:.4f}",
                    "",
                    "",
                    "",
                    "",
                    f"{value * price:.2f}",
                    outlook.currency,
                ]
            )
        for i, value in enumerate(fc.mean):
            hour = outlook.forecast_start + timedelta(hours=i)
            writer.writerow(
                [
                    outlook.customer,
                    hour.isoformat(),
                    "forecast",
                    f"{value:.4f}",
                    f"{fc.lower[80][i]:.4f}",
                    f"{fc.upper[80][i]:.4f}",
                    f"{fc.lower[95][i]:.4f}",
                    f"{fc.upper[95][i]:.4f}",
                    f"{value * price:.2f}",
                    outlook.currency,
                ]
            )
    return path


def customer_chart(outlook: CustomerOutlook, out_dir: Path, show_hours: int = 7 * 24) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"forecast-{safe_name(outlook.customer)}.png"
    shown = outlook.history[-show_hours:]
    first = outlook.history_start + timedelta(hours=len(outlook.history) - len(shown))
    past = [first + timedelta(hours=i) for i in range(len(shown))]
    fc = outlook.forecast.forecast
    future = [outlook.forecast_start + timedelta(hours=i) for i in range(len(fc.mean))]
    figure, axis = plt.subplots(figsize=(10, 4), dpi=100)
    axis.plot(past, shown, color="#1f77b4", linewidth=1, label="GPU-hours per hour")
    axis.fill_between(future, fc.lower[95], fc.upper[95], color="#ff7f0e", alpha=0.15, label="95 %")
    axis.fill_between(future, fc.lower[80], fc.upper[80], color="#ff7f0e", alpha=0.3, label="80 %")
    axis.plot(future, fc.mean, color="#ff7f0e", linewidth=1.5, label=f"forecast ({outlook.forecast.model})")
    axis.set_title(f"{outlook.customer}: GPU usage and forecast")
    axis.set_ylabel("GPU-hours per hour")
    axis.legend(loc="upper left", fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def customer_markdown(outlook: CustomerOutlook) -> str:
    fc = outlook.forecast
    horizon = fc.horizon
    next_hours = fc.total()
    budget = "no budget set" if outlook.budget is None else f"{outlook.budget} {outlook.currency}"
    lines = [
        f"# GPU usage forecast: {outlook.customer}",
        "",
        f"- Model: `{outlook.forecast.model}` ({outlook.forecast.reason})",
        f"- Next {horizon} h: **{next_hours:.2f} GPU-hours** "
        f"(80 %: {fc.total(80, 'lower'):.2f} to {fc.total(80, 'upper'):.2f}), about "
        f"{Decimal(str(next_hours)) * outlook.price_per_gpu_hour:.2f} {outlook.currency}",
        f"- Month to date: {outlook.month_to_date} {outlook.currency}; projected month end: "
        f"**{outlook.projected_month_end} {outlook.currency}**; budget: {budget}",
    ]
    if outlook.forecast.cleaned.outages:
        lines.append(
            f"- Outages left out of the fit: {len(outlook.forecast.cleaned.outages)} "
            f"({sum(n for _, n in outlook.forecast.cleaned.outages)} h)"
        )
    if outlook.forecast.backtest is not None:
        bt = outlook.forecast.backtest
        lines += ["", "| model | MASE | 80 % coverage | 95 % coverage |", "|---|---|---|---|"]
        for name, value in sorted(bt.mase.items(), key=lambda item: item[1]):
            lines.append(f"| {name} | {value:.3f} | {bt.coverage80[name]:.0%} | {bt.coverage95[name]:.0%} |")
    return "\n".join(lines)


def supplier_csv(outlooks: list[SupplierOutlook], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for o in outlooks:
        path = out_dir / f"supplier-forecast-{safe_name(o.supplier)}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "supplier",
                    "window_hours",
                    "allocated_gpu_hours",
                    "capacity_gpu_hours",
                    "idle_gpu_hours",
                    "utilisation",
                    "forecast_hours",
                    "forecast_gpu_hours",
                    "projected_payout",
                    "currency",
                ]
            )
            capacity = o.capacity_gpu_hours
            writer.writerow(
                [
                    o.supplier,
                    o.window_hours,
                    f"{o.allocated_gpu_hours:.3f}",
                    "" if capacity is None else f"{capacity:.3f}",
                    "" if capacity is None else f"{capacity - o.allocated_gpu_hours:.3f}",
                    "" if o.utilisation is None else f"{o.utilisation:.3f}",
                    o.horizon,
                    f"{o.forecast_gpu_hours:.3f}",
                    o.projected_payout,
                    o.currency,
                ]
            )
        paths.append(path)
    return paths


def supplier_markdown(o: SupplierOutlook) -> str:
    capacity = "no capacity declared" if o.capacity_gpu_hours is None else f"{o.capacity_gpu_hours:.1f} GPU-h"
    utilisation = "n/a" if o.utilisation is None else f"{o.utilisation:.1%}"
    idle = (
        "n/a" if o.capacity_gpu_hours is None else f"{o.capacity_gpu_hours - o.allocated_gpu_hours:.1f} GPU-h"
    )
    return "\n".join(
        [
            f"# Supplier outlook: {o.supplier}",
            "",
            f"- Last {o.window_hours} h: {o.allocated_gpu_hours:.1f} GPU-h allocated of {capacity} "
            f"(utilisation {utilisation}, idle {idle})",
            f"- Next {o.horizon} h: **{o.forecast_gpu_hours:.1f} GPU-h** forecast demand "
            f"(`{o.forecast.model}`), projected payout **{o.projected_payout} {o.currency}**",
        ]
    )
