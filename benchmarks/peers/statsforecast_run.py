"""Nixtla statsforecast on the forecast benchmark's series and origins, in the peers' own venv (.venv-peers).

Input (a .npz written by benchmarks/forecast.py): for each task `i`, `y_i` (the history before the origin),
plus `ids`, `season` and `horizon`. Output (.npz): for each model and task, the mean and the 80/95 % bounds,
and the CPU seconds each model took per task. Run as: python statsforecast_run.py IN.npz OUT.npz
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from statsforecast import StatsForecast
from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta, SeasonalNaive

MODELS = {
    "sf_AutoETS": lambda m: AutoETS(season_length=m),
    "sf_AutoARIMA": lambda m: AutoARIMA(season_length=m),
    "sf_MSTL": lambda m: MSTL(season_length=[m, 7 * m], trend_forecaster=AutoETS(model="ZZN")),
    "sf_AutoTheta": lambda m: AutoTheta(season_length=m),
    "sf_SeasonalNaive": lambda m: SeasonalNaive(season_length=m),
}


def main(source: str, target: str) -> None:
    data = np.load(source)
    season, horizon = int(data["season"]), int(data["horizon"])
    tasks = [str(t) for t in data["ids"]]
    out: dict[str, np.ndarray] = {}
    for name, make in MODELS.items():
        means, bounds, seconds = [], {k: [] for k in ("lo-80", "hi-80", "lo-95", "hi-95")}, []
        for i, _ in enumerate(tasks):
            y = data[f"y_{i}"]
            frame = pd.DataFrame(
                {"unique_id": "s", "ds": pd.date_range("2020-01-01", periods=len(y), freq="h"), "y": y}
            )
            model = make(season)
            began = time.process_time()
            try:
                fc = StatsForecast(models=[model], freq="h", n_jobs=1).forecast(
                    df=frame, h=horizon, level=[80, 95]
                )
                column = [c for c in fc.columns if c not in ("unique_id", "ds") and "-" not in c][0]
                means.append(np.maximum(fc[column].to_numpy(), 0))
                for key in bounds:
                    bounds[key].append(np.maximum(fc[f"{column}-{key}"].to_numpy(), 0))
            except Exception:  # noqa: BLE001 - a peer that cannot fit a history scores NaN there
                means.append(np.full(horizon, np.nan))
                for key in bounds:
                    bounds[key].append(np.full(horizon, np.nan))
            seconds.append(time.process_time() - began)
        out[f"{name}|mean"] = np.array(means)
        for key, values in bounds.items():
            out[f"{name}|{key}"] = np.array(values)
        out[f"{name}|seconds"] = np.array(seconds)
    np.savez(target, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
