"""Usage forecast on the Helios virtual clusters: the auto forecast (the backtest-trimmed combination) and
the single best model on its backtest, against seasonal naive and each fixed model, on held-out origins.

For each virtual cluster (hourly mean running GPUs, May 2020; ../shared/data/helios-vc, else the three
committed slices), the last 2 weeks are the evaluation: 14 daily origins, 24-hour horizon. At each origin
the forecast sees only the history before it (its own rolling-origin backtest of 7 origins inside that
history), then it is scored on the next 24 hours, exactly as every fixed model (refitted on that history)
is. Outage hours are not scored. Reported: MASE per series and per week, 80/95 % coverage, and seconds per
series (backtest + forecast, one core; the flow spreads series over both cores). Then the same on a
second dataset, when ../shared/data has it: GPUs allocated per hour in Alibaba's GPU pod trace.

Targets (issue 5): auto never worse than seasonal naive on any series; on average within 5 % of the best
fixed model chosen in hindsight; <= 1 s per series."""

from __future__ import annotations

import csv
import gzip
import math
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.forecast.models import MODELS, Candidate, clean, forecast_series, mase_scale

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "helios-vc"
SLICES = ROOT / "tests" / "data" / "forecast"
ALIBABA = ROOT.parent / "shared" / "data" / "alibaba-openb-pods" / "openb_pod_list_default.csv"
HORIZON, ORIGINS, WEEKS = 24, 7, 2


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
    mase: dict[str, list[float]]  # model (or "auto", "best") → MASE at each held-out origin
    inside80: dict[str, int]
    inside95: dict[str, int]
    points: int
    chosen: list[str]  # what `best` chose at each origin
    seconds_per_series: float  # CPU seconds of one auto forecast (backtest included), one core
    failed: dict[str, int]  # fixed model → origins where it could not be fitted (scored NaN, left out)


def evaluate(item: tuple[str, np.ndarray]) -> SeriesScore:
    name, y = item
    cleaned_all = clean(y, 24)
    n = len(y)
    cuts = [n - (WEEKS * ORIGINS - i) * HORIZON for i in range(WEEKS * ORIGINS)]
    scores: dict[str, list[float]] = defaultdict(list)
    inside80: dict[str, int] = defaultdict(int)
    inside95: dict[str, int] = defaultdict(int)
    points, chosen, seconds = 0, [], []
    failed: dict[str, int] = defaultdict(int)
    for cut in cuts:
        actual, scored = cleaned_all.values[cut : cut + HORIZON], cleaned_all.observed[cut : cut + HORIZON]
        history = clean(y[:cut], 24)
        scale = mase_scale(history.values, history.observed, 24)
        began = time.process_time()
        auto = forecast_series(name, y[:cut], 24, HORIZON, origins=ORIGINS)
        seconds.append(time.process_time() - began)
        best = forecast_series(name, y[:cut], 24, HORIZON, origins=ORIGINS, method="best")
        chosen.append(best.model)
        forecasts = {"auto": auto.forecast, "best": best.forecast}
        for model in MODELS:
            # Each fixed model refitted on the whole history at every origin.
            try:
                candidate = Candidate(model, history.values, 24)
                forecasts[model] = candidate.forecasts(history.values, [(cut, HORIZON)])[0]
            except Exception:  # noqa: BLE001 - a model that cannot fit this history scores NaN here
                scores[model].append(math.nan)
                failed[model] += 1
        for model, fc in forecasts.items():
            # An origin whose next day is all outage is scored by nobody (NaN), and skipped in the means.
            error = np.abs(fc.mean - actual)[scored]
            scores[model].append(float(error.mean()) / scale if scored.any() else math.nan)
            inside80[model] += int(((actual >= fc.lower[80]) & (actual <= fc.upper[80]))[scored].sum())
            inside95[model] += int(((actual >= fc.lower[95]) & (actual <= fc.upper[95]))[scored].sum())
        points += int(scored.sum())
    return SeriesScore(
        name,
        dict(scores),
        dict(inside80),
        dict(inside95),
        points,
        chosen,
        float(np.mean(seconds)),
        dict(failed),
    )


def summary(results: list[SeriesScore], origins: slice, label: str) -> tuple[str, dict[str, float]]:
    """Mean MASE per model over the series (each series: its mean over these origins), and the verdicts."""
    per_series = {c: {r.series: float(np.nanmean(r.mase[c][origins])) for r in results} for c in COLUMNS}
    mean = {c: float(np.mean(list(per_series[c].values()))) for c in COLUMNS}
    best_fixed = min(MODELS, key=lambda m: mean[m])
    verdicts = []
    for method in ("auto", "best"):
        worse = [s for s, v in per_series[method].items() if v > per_series["seasonal_naive"][s]]
        verdicts.append(
            f"{method} {mean[method] / mean[best_fixed] - 1:+.1%} vs {best_fixed}, worse than seasonal naive "
            f"on {', '.join(worse) or 'no series'}"
        )
    return f"- {label}: " + "; ".join(verdicts) + ".", mean


COLUMNS = ["auto", "best", *MODELS]


def alibaba_pods() -> dict[str, np.ndarray]:
    """A second dataset: GPUs allocated per hour in Alibaba's GPU cluster trace (openb pods, about five
    months), all pods and per QoS class, each over the last month and the month before (744 hours, as long as
    the Helios series). A window is left out when its history before the held-out weeks, or the weeks
    themselves, have no usage (no scale to score on). Needs ../shared/data; nothing is committed."""
    if not ALIBABA.is_file():
        return {}
    with ALIBABA.open() as handle:
        pods = [row for row in csv.DictReader(handle) if row["scheduled_time"] and int(row["num_gpu"])]
    end = max(int(p["deletion_time"] or 0) for p in pods)
    hours = end // 3600 + 1
    series: dict[str, np.ndarray] = {}
    for qos in ("all", "LS", "BE", "Burstable"):
        y = np.zeros(hours)
        for pod in pods:
            if qos != "all" and pod["qos"] != qos:
                continue
            gpus = int(pod["num_gpu"]) * int(pod["gpu_milli"]) / 1000
            start, stop = int(pod["scheduled_time"]), int(pod["deletion_time"] or end)
            for hour in range(start // 3600, stop // 3600 + 1):  # the share of each hour the pod held
                y[hour] += gpus * max(0, min(stop, (hour + 1) * 3600) - max(start, hour * 3600)) / 3600
        for month in range(2):
            window = y[hours - (month + 1) * 744 : hours - month * 744]
            if window[: -WEEKS * ORIGINS * HORIZON].any() and window[-WEEKS * ORIGINS * HORIZON :].any():
                series[f"{qos}-{'last' if month == 0 else 'previous'}-month"] = window
    return series


def section(title: str, items: list[tuple[str, np.ndarray]], targets: bool) -> list[str]:
    began = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(evaluate, items))
    wall = time.perf_counter() - began
    lines = [
        f"### {title}",
        "",
        "MASE (lower is better) over every held-out origin; auto's 80 % / 95 % interval coverage; "
        "what `best` chose at the origins.",
        "",
        "| series | " + " | ".join(COLUMNS) + " | auto 80 % / 95 % | best chose | s/series |",
        "|---|" + "---|" * (len(COLUMNS) + 3),
    ]
    for r in results:
        cells = [
            f"{np.nanmean(r.mase[c]):.3f}" + (f" ({r.failed[c]} failed)" if c in r.failed else "")
            for c in COLUMNS
        ]
        chosen = ", ".join(f"{m} x{r.chosen.count(m)}" for m in sorted(set(r.chosen)))
        coverage = f"{r.inside80['auto'] / r.points:.0%} / {r.inside95['auto'] / r.points:.0%}"
        lines.append(
            f"| {r.series} | {' | '.join(cells)} | {coverage} | {chosen} | {r.seconds_per_series:.2f} |"
        )
    overall, mean = summary(results, slice(None), f"All {WEEKS * ORIGINS} origins")
    points = sum(r.points for r in results)
    cov = {
        c: (sum(r.inside80[c] for r in results) / points, sum(r.inside95[c] for r in results) / points)
        for c in COLUMNS
    }
    seconds = float(np.mean([r.seconds_per_series for r in results]))
    lines += [
        f"| **mean** | {' | '.join(f'**{mean[c]:.3f}**' for c in COLUMNS)} | "
        f"{cov['auto'][0]:.0%} / {cov['auto'][1]:.0%} | | {seconds:.2f} |",
        "",
    ]
    if targets:
        lines += [
            "Targets (issue 5): never worse than seasonal naive on any series; on average within +5 % of the "
            "best fixed model in hindsight; <= 1 s per series.",
            "",
        ]
    lines.append(overall)
    for week in range(WEEKS):
        origins = slice(week * ORIGINS, (week + 1) * ORIGINS)
        lines.append(summary(results, origins, f"Week {week + 1} of {WEEKS} alone ({ORIGINS} origins)")[0])
    lines += [
        "- Interval coverage (80 % / 95 %): "
        + ", ".join(f"{c} {cov[c][0]:.0%} / {cov[c][1]:.0%}" for c in COLUMNS)
        + ".",
        f"- Seconds per series: CPU time of one auto forecast (a {ORIGINS}-origin backtest of "
        f"{len(MODELS)} models and the forecast) on one core; the flow spreads series over both cores. "
        f"The whole table took {wall:.0f} s on 2 processes.",
    ]
    return lines


def report() -> str:
    helios = [(name, hourly(path)) for name, path in clusters().items()]
    lines = section(
        f"Usage forecast (Helios: {len(helios)} virtual clusters, {WEEKS * ORIGINS} held-out origins "
        f"x {HORIZON} h: the last {WEEKS} weeks)",
        helios,
        targets=True,
    )
    alibaba = alibaba_pods()
    if alibaba:
        lines += [
            "",
            *section(
                f"Usage forecast, second dataset (Alibaba GPU pods: {len(alibaba)} series, the same "
                f"{WEEKS * ORIGINS} held-out origins)",
                list(alibaba.items()),
                targets=False,
            ),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    sys.exit(0)
