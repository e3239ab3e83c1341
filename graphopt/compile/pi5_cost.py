"""A Raspberry Pi 5 latency model: instructions counted under an emulated Cortex-A76, over a rate per
runtime × precision class fitted to the Pi 5's published latencies (benchmarks/pi5_cost).

An estimate, never a measurement: `estimate()` returns one only for a class the validation accepted
(median relative error ≤ 15 %, worst ≤ 35 % against the published figures), labelled with that error
and with how the instructions were obtained — counted (qemu, exact for the model) or proxied
(MACs × the class's instructions per MAC, fitted on counted models, with its own stated error). What
it cannot see (memory bandwidth, thermal throttling) is in `LIMITS`.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("pi5_cost.json")
MAX_MEDIAN_ERROR = 0.15  # acceptance: median relative error against the published Pi 5 figures
MAX_WORST_ERROR = 0.35  # and the worst one
LIMITS = (
    "instructions only: memory bandwidth and cache misses (the Pi 5's LPDDR4X, 2 MB L3) and thermal "
    "throttling (a Pi 5 without cooling throttles at 80-85 °C) are not seen"
)


class Pi5CostError(Exception):
    """The committed data is missing or malformed."""


@lru_cache(maxsize=1)
def load(path: str | None = None) -> dict[str, Any]:
    """The committed model (pi5_cost.json): classes with their rates and validation."""
    p = Path(path) if path else DATA
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise Pi5CostError(f"{p}: unreadable Pi 5 cost model ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise Pi5CostError(f"{p}: no 'classes' in the Pi 5 cost model")
    for name, c in data["classes"].items():
        if not isinstance(c, dict) or not isinstance(c.get("rates"), dict) or "accepted" not in c:
            raise Pi5CostError(f"{p}: class {name} lacks 'rates' or 'accepted'")
    return data


def class_of(backend: str, precision: str) -> str:
    """`ncnn-fp16`, `ncnn-int8`, `ort-fp32`, `ort-int8`: the runtime × precision class."""
    if backend == "ncnn":
        return "ncnn-int8" if precision == "int8" else "ncnn-fp16"
    return "ort-int8" if precision == "int8" else "ort-fp32"


def relative_errors(predicted: list[float], published: list[float]) -> list[float]:
    return [p / q - 1 for p, q in zip(predicted, published, strict=True)]


def fit_rate(insns: list[float], ms: list[float]) -> float:
    """Instructions per millisecond: the geometric mean of the models' own rates (least squares on
    log time, so a 2x slow and a 2x fast model weigh alike)."""
    if not insns or len(insns) != len(ms):
        raise ValueError("fit_rate needs as many counts as times, at least one")
    return math.exp(statistics.fmean(math.log(i / t) for i, t in zip(insns, ms, strict=True)))


def validate(rows: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """Fit one rate on rows ({name, insns, published_ms}) and judge it: per-model predicted vs
    published, median and worst |relative error|, and the same leave-one-out (each model predicted
    by the rate fitted on the others)."""
    insns = [float(r["insns"]) for r in rows]
    ms = [float(r["published_ms"]) for r in rows]
    rate = fit_rate(insns, ms)
    table = []
    for r, i, t in zip(rows, insns, ms, strict=True):
        table.append({"name": r["name"], "insns": int(i), "published_ms": t, "predicted_ms": round(i / rate, 3),
                      "error": round(i / rate / t - 1, 4)})
    errs = [abs(e["error"]) for e in table]
    loo: list[float] = []
    if len(rows) >= 2:
        for k in range(len(rows)):
            rk = fit_rate(insns[:k] + insns[k + 1:], ms[:k] + ms[k + 1:])
            loo.append(abs(insns[k] / rk / ms[k] - 1))
    median, worst = statistics.median(errs), max(errs)
    return {
        "threads": threads,
        "rate_insns_per_ms": round(rate),
        "models": len(rows),
        "median_error": round(median, 4),
        "worst_error": round(worst, 4),
        "loo_median_error": round(statistics.median(loo), 4) if loo else None,
        "loo_worst_error": round(max(loo), 4) if loo else None,
        "accepted": len(rows) >= 2 and median <= MAX_MEDIAN_ERROR and worst <= MAX_WORST_ERROR,
        "table": table,
    }


@dataclass(frozen=True)
class Estimate:
    ms: float
    threads: int
    klass: str
    method: str  # counted | proxy
    error: dict[str, float]  # median/worst relative error of the rate's validation (and the proxy's)
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"ms": round(self.ms, 2), "threads": self.threads, "class": self.klass, "method": self.method,
                "error": self.error, "label": self.label, "estimate": True}


def estimate(insns: float, backend: str, precision: str, threads: int, method: str = "counted",
             proxy_error: dict[str, float] | None = None, data: dict[str, Any] | None = None) -> Estimate | None:
    """Estimated Pi 5 milliseconds of `insns` instructions per inference, or None where the class (at
    this thread count) was not validated and accepted."""
    data = data or load()
    klass = class_of(backend, precision)
    c = data["classes"].get(klass)
    if c is None or not c["accepted"]:
        return None
    rate = c["rates"].get(str(threads))
    if rate is None or not rate.get("accepted"):
        return None
    err = {"median": rate["median_error"], "worst": rate["worst_error"]}
    how = "instructions counted under qemu -cpu cortex-a76"
    if method == "proxy":
        if proxy_error is None:
            return None
        err = {**err, "proxy_median": proxy_error["median"], "proxy_worst": proxy_error["worst"]}
        how = (f"instructions proxied from MACs (±{proxy_error['median']:.0%} median, "
               f"{proxy_error['worst']:.0%} worst on counted models)")
    ms = insns / rate["rate_insns_per_ms"]
    label = (f"Pi 5 estimate, not measured: {how} / {klass} rate at {threads} thread(s) fitted on "
             f"{rate['models']} published Pi 5 latencies (median error {rate['median_error']:.0%}, "
             f"worst {rate['worst_error']:.0%})")
    return Estimate(ms, threads, klass, method, err, label)


def why_not(backend: str, precision: str, threads: int, data: dict[str, Any] | None = None) -> str:
    """Why a class gets no estimate (for the report)."""
    data = data or load()
    klass = class_of(backend, precision)
    c = data["classes"].get(klass)
    if c is None or not c["rates"]:
        return f"no Pi 5 estimate for {klass}: no published Pi 5 latencies to validate it against"
    rate = c["rates"].get(str(threads))
    if rate is None:
        return f"no Pi 5 estimate for {klass} at {threads} thread(s): not validated at that thread count"
    if not rate.get("accepted"):
        return (f"no Pi 5 estimate for {klass} at {threads} thread(s): its validation failed (median error "
                f"{rate['median_error']:.0%}, worst {rate['worst_error']:.0%}; accepted at ≤15 %/≤35 %)")
    return c.get("note", "")


def proxy_insns(macs: int, backend: str, precision: str, data: dict[str, Any] | None = None
                ) -> tuple[float, dict[str, float]] | None:
    """Instructions from MACs for a model that was not counted: the class's instructions per MAC
    (fitted on counted ONNX models) and that proxy's own error; None without a proxy for the class."""
    data = data or load()
    p = data.get("proxy", {}).get(class_of(backend, precision))
    if not p or not p.get("accepted") or macs <= 0:
        return None
    return macs * p["insns_per_mac"], {"median": p["median_error"], "worst": p["worst_error"]}


def estimate_from_macs(macs: int | None, backend: str, precision: str, threads: int,
                       data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a report shows for a model that was not counted: the proxied estimate at `threads`, or
    why there is none (`ms` None and `why`). Always marked `estimate: true`."""
    try:
        data = data or load()
    except Pi5CostError as exc:
        return {"ms": None, "estimate": True, "why": str(exc)}
    proxied = proxy_insns(macs or 0, backend, precision, data)
    est = None
    if proxied is not None:
        est = estimate(proxied[0], backend, precision, threads, "proxy", proxied[1], data)
        if est is None and threads != 1:  # the class is validated on one thread only: say so, give that
            one = estimate(proxied[0], backend, precision, 1, "proxy", proxied[1], data)
            if one is not None:
                return one.as_dict() | {"not_at_threads": why_not(backend, precision, threads, data)}
    if est is not None:
        return est.as_dict()
    why = why_not(backend, precision, threads, data)
    c = data["classes"].get(class_of(backend, precision))
    if (not why or (c and c.get("accepted") and str(threads) in c["rates"])) and proxied is None:
        klass = class_of(backend, precision)
        p = data.get("proxy", {}).get(klass)
        if not macs:
            why = f"no Pi 5 estimate: the model's MACs are unknown (the {klass} rate needs its instructions)"
        elif p and not p.get("accepted"):
            why = (f"no Pi 5 estimate from MACs: the {klass} MACs proxy misses counted models by "
                   f"{p['median_error']:.0%} median, {p['worst_error']:.0%} worst (accepted at ≤15 %/≤35 %); "
                   "count the model (benchmarks/pi5_cost) for one")
        else:
            why = f"no Pi 5 estimate: no MACs proxy for {klass}"
    return {"ms": None, "estimate": True, "class": class_of(backend, precision), "threads": threads, "why": why}


INT8_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul")


def model_estimate(path: str | Path, threads: int = 4) -> dict[str, Any]:
    """`graphopt bench --pi5-estimate`: the estimated Pi 5 latency of an ONNX model (onnxruntime;
    fp32, or int8 when it holds QDQ / integer ops) or an NCNN folder/.param (fp16, or int8 where
    graphopt's int8 writer made it; MACs from the sidecar graphopt's converter writes), from its MACs; `ms` None with `why` where there is none."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".param":
        folder = p if p.is_dir() else p.parent
        sidecar = next(iter(sorted(folder.glob("*.ncnn.json"))), None)
        meta: dict[str, Any] = {}
        if sidecar is not None:
            try:
                loaded = json.loads(sidecar.read_text())
                meta = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                meta = {}
        macs = meta.get("macs")
        precision = "int8" if meta.get("int8") else "fp16"  # graphopt's NCNN int8 writer records its layers
        return estimate_from_macs(macs if isinstance(macs, int) else None, "ncnn", precision, threads)
    from graphopt.core.macs import macs_summary
    from graphopt.core.model import load_model

    model = load_model(p)
    precision = "int8" if any(n.op_type in INT8_OPS for n in model.graph.node) else "fp32"
    macs = int(macs_summary(model)["macs"])  # type: ignore[call-overload]
    return estimate_from_macs(macs, "ort", precision, threads)
