"""The one comparison rule: `|a - b| <= atol + rtol·|b|` element-wise (b the reference), NaN equal
only to NaN at the same place; and the one cosine. Used by the pipeline's equivalence check, the
exporter's check against torch, and the measurements of lossy passes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


def abs_diff(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|candidate - reference| in float64; 0 where both are NaN, inf where only one is."""
    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return np.where(np.isnan(diff), np.inf, diff)


def within(candidate: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> bool:
    """The tolerance rule."""
    diff = abs_diff(candidate, reference)
    bound = atol + rtol * np.abs(np.nan_to_num(np.asarray(reference, np.float64)))
    return bool(np.all(diff <= bound))


def cosine(reference: Iterable[np.ndarray], candidate: Iterable[np.ndarray]) -> float:
    """Cosine similarity of all arrays flattened together (NaN when a side is all zero or sizes differ)."""
    a = np.concatenate([np.ravel(x).astype(np.float64) for x in reference])
    b = np.concatenate([np.ravel(x).astype(np.float64) for x in candidate])
    if a.shape != b.shape:
        return float("nan")
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float("nan")


@dataclass
class Comparison:
    ok: bool
    max_abs: float
    max_rel: float
    worst_output: str | None
    compared: list[str]
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "max_abs_err": self.max_abs,
            "max_rel_err": self.max_rel,
            "worst_output": self.worst_output,
            "outputs": self.compared,
            "reason": self.reason,
        }


def compare(
    reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]], atol: float, rtol: float
) -> Comparison:
    """The tolerance rule over every reference output, by name: a reference output the candidate lacks
    fails (the pipeline drops announced removals from the reference)."""
    common = [k for k in reference[0] if k in candidate[0]]
    missing = [k for k in reference[0] if k not in candidate[0]]
    if missing:
        return Comparison(
            False, float("inf"), float("inf"), missing[0], common, f"output(s) {', '.join(missing)} missing"
        )
    if not common:
        return Comparison(False, float("inf"), float("inf"), None, [], "no output names in common")
    max_abs = max_rel = 0.0
    worst, ok, reason = None, True, ""
    for ref, cand in zip(reference, candidate, strict=True):
        for name in common:
            a, b = np.asarray(cand[name]), np.asarray(ref[name])
            if a.shape != b.shape:
                return Comparison(
                    False, float("inf"), float("inf"), name, common, f"shape {a.shape} != {b.shape}"
                )
            if a.size == 0:
                continue
            diff = abs_diff(a, b)
            err = float(diff.max())
            big = np.abs(np.nan_to_num(b.astype(np.float64))) > atol
            rel = float((diff[big] / np.abs(b.astype(np.float64)[big])).max()) if big.any() else 0.0
            if err > max_abs:
                max_abs, worst = err, name
            max_rel = max(max_rel, rel)
            if not within(a, b, atol, rtol):
                ok = False
                reason = reason or f"output '{name}' differs"
    return Comparison(ok, max_abs, max_rel, worst, common, reason)


def cosine_of_outputs(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> float:
    """`cosine` over the outputs both sides have, feed by feed (for lossy passes)."""
    common = [k for k in reference[0] if k in candidate[0]]
    return cosine((r[k] for r in reference for k in common), (c[k] for c in candidate for k in common))
