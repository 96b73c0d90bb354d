"""Idle and busy regimes: customers come and go, and a cluster that went idle, or woke up, is a level shift
the forecast must follow within hours, not a gap to fill.

- idle: the last season (a day of hours) or more was observed and all zero. The models, fitted on a busy past,
  would forecast the busy past; the forecast is idle, with the models' upper bounds kept as the chance it
  wakes up.
- woke up: after an idle spell of a season or more, the cluster has been busy for at least WOKE_MIN steps
  in a row, and less than a season. The history before the spell says little about the new tenant, and
  seasonal naive would repeat the idle day: the forecast is the level since it woke, with bounds from its
  spread. A bursty series (nine in ten of its busy spells before the idle one ended within a season: a
  customer who runs a few hours a night) wakes like that every time: for it a wake is a burst, and the
  models' forecast stands, until it has outlasted those spells.
- steady: anything else; the models' forecast stands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

IDLE_EPSILON = 1e-9  # usage below this (a rounding residue) counts as none
WOKE_MIN = 3  # busy steps in a row after an idle spell before it counts as woken: one burst is not a tenant


@dataclass(frozen=True, slots=True)
class Regime:
    kind: Literal["steady", "idle", "woke"]
    steps: int  # how long it has been idle, or busy since it woke (0 when steady)
    level: float  # the mean since it woke (0 otherwise)

    def describe(self) -> str:
        if self.kind == "idle":
            return f"idle for the last {self.steps} h: forecast idle"
        if self.kind == "woke":
            return f"woke up {self.steps} h ago after an idle spell: forecast at its level ({self.level:.3g})"
        return ""


def _trailing(flags: np.ndarray) -> int:
    """How many of the last steps are True in a row."""
    if not flags.size or not flags[-1]:
        return 0
    falses = np.flatnonzero(~flags)
    return int(flags.size - (falses[-1] + 1 if falses.size else 0))


def _spells(busy: np.ndarray) -> np.ndarray:
    """The lengths of the runs of True."""
    edges = np.diff(np.r_[0, busy.astype(np.int8), 0])
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def current_regime(values: np.ndarray, observed: np.ndarray, season: int) -> Regime:
    """The regime at the end of the history. Unobserved steps (missing, declared outages) are neither idle
    nor busy: they are skipped."""
    y = np.asarray(values, dtype=float)[np.asarray(observed, dtype=bool)]
    idle = np.abs(y) <= IDLE_EPSILON
    quiet = _trailing(idle)
    if quiet >= season:
        return Regime("idle", quiet, 0.0)
    busy = _trailing(~idle)
    spell = _trailing(idle[: y.size - busy])
    if WOKE_MIN <= busy < season and spell >= season:
        earlier = _spells(~idle[: y.size - busy - spell])
        burst = float(np.percentile(earlier, 90)) if earlier.size else math.inf
        if burst >= season or busy > burst:
            return Regime("woke", busy, float(y[-busy:].mean()))
    return Regime("steady", 0, 0.0)
