"""What `graphopt compile` hands back: typed stages and reports (their `as_dict()` is the --json form)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


@dataclass
class Stage:
    name: str
    artifact: Path | None = None
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    accuracy_from: str | None = None  # a stage verified equal to an earlier one reuses its mAP
    # Where the mAP was computed: "target" (the target's kernels), "host" (another kind of CPU),
    # "host-reference" (this host runs a reference of what the target computes, e.g. S8S8 on x86).
    accuracy_on: str | None = None
    accuracy_note: str | None = None
    latency_ms: float | None = None  # on the target (None when this host's clock does not speak for it)
    speedup: float | None = None  # vs the first stage (the model as trained), same run, on the target
    host_latency_ms: float | None = None  # this host's clock, whatever it is
    host_speedup: float | None = None
    backend: str = "ort"
    parent: str | None = None  # the stage this one was made from
    lossy: bool = False
    precision: str = "fp32"  # what computes: fp32 | int8 | fp16
    deployed: bool | None = None  # on the deployed chain (None: not decided yet)
    # Pi 5 targets on a host that cannot time them: the estimated Pi 5 latency (graphopt.compile.pi5_cost),
    # {"ms", "threads", "class", "method", "error", "label", "estimate": True}, or {"ms": None, "why"}
    pi5_estimate: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "artifact": str(self.artifact) if self.artifact else None,
            "backend": self.backend,
            "seconds": round(self.seconds, 2),
            **{k: self.summary.get(k) for k in ("nodes", "params", "macs")},
            "ops": self.summary.get("ops"),
            "map50_95": None if self.accuracy is None else self.accuracy["map50_95"],
            "map50": None if self.accuracy is None else self.accuracy["map50"],
            "accuracy_from": self.accuracy_from,
            "accuracy_on": self.accuracy_on,
            "accuracy_note": self.accuracy_note,
            "latency_ms": _round(self.latency_ms, 2),
            "speedup": _round(self.speedup, 3),
            "host_latency_ms": _round(self.host_latency_ms, 2),
            "host_speedup": _round(self.host_speedup, 3),
            "parent": self.parent,
            "lossy": self.lossy,
            "precision": self.precision,
            "deployed": self.deployed,
            "pi5_estimate": self.pi5_estimate,
            "notes": self.notes,
        }


@dataclass
class CompileReport:
    source: str
    target: str
    device: str
    backend: str
    measured_on: str
    latency_note: str | None
    calibration: str
    accuracy_data: str | None
    stages: list[Stage]
    final: str | None
    seconds: float
    failed: dict[str, str] | None = None
    arithmetic: dict[str, Any] = field(default_factory=dict)  # which figures are the target's, which the host's
    deploy: dict[str, Any] | None = None  # the lossy stages' decisions (graphopt.compile.deploy)
    latency: dict[str, Any] | None = None
    frame_ms: dict[str, float] | None = None
    frame_ms_on: str | None = None
    sample: str | None = None
    sample_detections: list[str] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    plot: str | None = None
    pi5_estimate: dict[str, Any] | None = None  # the cost model's data, limits and label (pi5 targets only)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "stages"}
        d["stages"] = [s.as_dict() for s in self.stages]
        if self.frame_ms is not None:
            d["frame_ms"] = {k: round(v, 2) for k, v in self.frame_ms.items()}
        if self.latency is None:  # not measured (a failed run): keep the keys the measured form has out
            for key in ("latency", "frame_ms", "frame_ms_on", "sample", "sample_detections", "plot"):
                d.pop(key)
        return d


@dataclass
class SearchConfig:
    imgsz: int
    prune: float | None
    int8: bool
    artifact: str = ""
    parent: str | None = None  # the fp32 configuration an int8 one was made from
    map50_95: float = 0.0
    map50: float = 0.0
    latency_ms: float | None = 0.0  # what the choice ranks by (None: not rankable on this host)
    speedup: float | None = 1.0
    host_latency_ms: float = 0.0
    loss_points: float = 0.0
    pareto: bool = False
    chosen: bool = False
    rankable: bool = True
    note: str | None = None
    pi5_estimate: dict[str, Any] | None = None  # as Stage.pi5_estimate; what a pi5 search ranks by where accepted

    @property
    def name(self) -> str:
        return f"{self.imgsz}" + (f"-p{self.prune}" if self.prune else "") + ("-int8" if self.int8 else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name}


@dataclass
class SearchReport:
    source: str
    target: str
    device: str
    budget: float
    calibration: str
    accuracy_data: str
    measured_on: str
    latency_note: str | None
    reference: str
    chosen: str
    final: str
    configs: list[SearchConfig]
    seconds: float
    baseline: dict[str, Any] | None = None
    plot: str | None = None
    pi5_estimate: dict[str, Any] | None = None  # the cost model's data, limits and label (pi5 targets only)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "configs"}
        d["search"] = [c.as_dict() for c in self.configs]
        d["stages"] = []
        return d
