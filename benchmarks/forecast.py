"""Usage forecast on the Helios virtual clusters: the auto-selected model against seasonal naive and each
fixed model, on held-out rolling origins.

For each virtual cluster (hourly mean running GPUs, May 2020; ../shared/data/helios-vc, else the three
committed slices), the last 7 days are the evaluation: 7 origins, 24-hour horizon. At each origin the
selection sees only the history before it (its own rolling-origin backtest of 7 origins inside that
history), then its choice is scored on the next 24 hours, exactly as every fixed model is. Outage hours
are not scored. Reported: MASE and 80/95 % coverage per series, and seconds per series (selection +
forecast, one core; the flow spreads series over both cores).

Targets (issue 5): auto never worse than seasonal naive on any series; on average within 5 % of the best
fixed model chosen in hindsight; <= 1 s per series.
"""

from __future__ import annotations

import csv
import gzip
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.forecasting import MODELS, Fitted, clean, forecast_series, mase_scale

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "helios-vc"
SLICES = ROOT / "tests" / "data" / "forecast"
HORIZON, ORIGINS = 24, 7


def clusters() -> dict[str, Path]:
    if SHARED.is_dir():
        return {p.name.split("_")[0]: p for p in sorted(SHARED.glob("vc*_cluster_sequence_vc.csv.gz"))}
    return {p.name.split("_")[0]: p for p in sorted(SLICES.glob("vc*_cluster_sequence_vc_slice.csv.gz"))}


def hourly(path: Path) -> np.ndarray:
    sums: dict[str, float] = defaultdict(float)
    with gzip.open(path, "rt") as handle:
        for row in csv.DictReader(handle):
            sums[row["time"][:13]] += float(row["running_gpu_num"]) / 60
    return np.array([sums[k] for k in sorted(sums)])


@dataclass(frozen=True, slots=True)
class SeriesScore:
    series: str
    mase: dict[str, float]  # model (or "auto") → mean MASE over the held-out origins
    coverage80: dict[str, float]
    coverage95: dict[str, float]
    chosen: list[str]  # what auto chose at each origin
    seconds_per_series: float


def evaluate(item: tuple[str, np.ndarray]) -> SeriesScore:
    name, y = item
    cleaned_all = clean(y, 24)
    n = len(y)
    cuts = [n - (ORIGINS - i) * HORIZON for i in range(ORIGINS)]
    scores: dict[str, list[float]] = defaultdict(list)
    inside80: dict[str, int] = defaultdict(int)
    inside95: dict[str, int] = defaultdict(int)
    points, chosen, seconds = 0, [], 0.0
    for cut in cuts:
        actual, scored = cleaned_all.values[cut : cut + HORIZON], cleaned_all.observed[cut : cut + HORIZON]
        if not scored.any():
            continue
        history = clean(y[:cut], 24)
        scale = mase_scale(history.values, history.observed, 24)
        began = time.process_time()
        auto = forecast_series(name, y[:cut], 24, HORIZON, origins=ORIGINS)
        seconds += time.process_time() - began
        chosen.append(auto.model)
        forecasts = {"auto": auto.forecast}
        for model in MODELS:
            try:
                forecasts[model] = Fitted(model, history.values, 24).forecast_from(history.values, HORIZON)
            except Exception:  # noqa: BLE001 - a model that cannot fit is reported as failed
                continue
        for model, fc in forecasts.items():
            scores[model].append(float(np.abs(fc.mean - actual)[scored].mean()) / scale)
            inside80[model] += int(((actual >= fc.lower[80]) & (actual <= fc.upper[80]))[scored].sum())
            inside95[model] += int(((actual >= fc.lower[95]) & (actual <= fc.upper[95]))[scored].sum())
        points += int(scored.sum())
    complete = {m: v for m, v in scores.items() if len(v) == len(scores["auto"])}
    return SeriesScore(
        name,
        {m: float(np.mean(v)) for m, v in complete.items()},
        {m: inside80[m] / points for m in complete},
        {m: inside95[m] / points for m in complete},
        chosen,
        seconds / max(1, len(chosen)),
    )


def report() -> str:
    items = [(name, hourly(path)) for name, path in clusters().items()]
    began = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(evaluate, items))
    wall = time.perf_counter() - began
    columns = ["auto", *MODELS]
    lines = [
        f"### Usage forecast (Helios: {len(results)} virtual clusters, {ORIGINS} held-out origins "
        f"x {HORIZON} h)",
        "",
        "MASE (lower is better), the auto choice's 80 % / 95 % interval coverage, its choices at the "
        "origins.",
        "",
        "| series | " + " | ".join(columns) + " | auto 80 % / 95 % | chosen | s/series |",
        "|---|" + "---|" * (len(columns) + 3),
    ]
    for r in results:
        cells = [f"{r.mase[c]:.3f}" if c in r.mase else "failed" for c in columns]
        chosen = ", ".join(f"{m} x{r.chosen.count(m)}" for m in sorted(set(r.chosen)))
        coverage = f"{r.coverage80['auto']:.0%} / {r.coverage95['auto']:.0%}"
        lines.append(
            f"| {r.series} | {' | '.join(cells)} | {coverage} | {chosen} | {r.seconds_per_series:.2f} |"
        )
    mean = {c: float(np.mean([r.mase[c] for r in results if c in r.mase])) for c in columns}
    best_fixed = min(MODELS, key=lambda m: mean[m])
    worse = [r.series for r in results if r.mase["auto"] > r.mase["seasonal_naive"]]
    cov80 = float(np.mean([r.coverage80["auto"] for r in results]))
    cov95 = float(np.mean([r.coverage95["auto"] for r in results]))
    seconds = float(np.mean([r.seconds_per_series for r in results]))
    lines += [
        f"| **mean** | {' | '.join(f'**{mean[c]:.3f}**' for c in columns)} | {cov80:.0%} / {cov95:.0%} | "
        f"| {seconds:.2f} |",
        "",
        f"- Auto vs the best fixed model in hindsight ({best_fixed}): "
        f"{mean['auto'] / mean[best_fixed] - 1:+.1%} (target: within +5 %).",
        f"- Series where auto is worse than seasonal naive: {', '.join(worse) or 'none'} (target: none).",
        "- Seconds per series: selection (a 7-origin backtest of 5 models) and the forecast, CPU time on one "
        f"core; the whole table took {wall:.0f} s on 2 processes.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    sys.exit(0)
