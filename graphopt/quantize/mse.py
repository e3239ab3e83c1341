"""Activation ranges that minimise the expected int8 error of each tensor (calibration=mse).

Percentile calibration clips a fixed share of every tensor whatever its shape; a tensor with a long
thin tail then spends most of its 256 levels on values that almost never occur. This picks, per
tensor, the clipping threshold t whose expected squared error over the calibration histogram of |x|
is least:

    E(t) = Σ_{|x| > t} n·(|x| − t)²  +  N_inside · Δ(t)² / 12,   Δ(t) = (min(t, max) − max(−t, min)) / 255

— clipping error above t, plus uniform rounding error inside, with Δ the step of the asymmetric
range the quantizer then builds (a SiLU output's small negative side does not cost half the levels:
onnxruntime clamps the lower bound to the tensor's minimum, as it does for percentile). The search
is closed-form over every bin edge (suffix sums), one numpy pass per tensor.
"""

from __future__ import annotations

import numpy as np

STEPS = 255  # int8 (or uint8): 256 levels


def mse_threshold(hist: np.ndarray, edges: np.ndarray, low: float, high: float) -> float:
    """The |x| threshold (a bin edge of `edges`) with the least expected int8 error for a tensor whose
    |x| histogram is `hist` over `edges` and whose values lie in [low, high]."""
    counts = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.sum() == 0:
        return float(edges[-1])
    centers = (edges[:-1] + edges[1:]) / 2
    # suffix sums over bins i ≥ k: the bins clipped by threshold edges[k]
    n_above = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    s1 = np.concatenate([np.cumsum((counts * centers)[::-1])[::-1], [0.0]])
    s2 = np.concatenate([np.cumsum((counts * centers**2)[::-1])[::-1], [0.0]])
    t = edges
    clipped = np.maximum(s2 - 2 * t * s1 + t**2 * n_above, 0.0)
    step = (np.minimum(t, high) - np.maximum(-t, low)) / STEPS
    inside = counts.sum() - n_above
    error = clipped + inside * step**2 / 12
    error[t <= 0] = np.inf  # a zero range quantizes everything to one value
    if not np.isfinite(error).any():
        return float(edges[-1])
    return float(t[int(np.argmin(error))])
