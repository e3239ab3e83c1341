"""Golden snapshots for CI: op counts, params and I/O shapes a model must keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphopt import __version__
from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import read_text, write_json

SNAPSHOT_KEYS = ("ops", "params", "inputs", "outputs")


def snapshot(summary: dict[str, Any]) -> dict[str, Any]:
    return {"graphopt": __version__, **{k: summary[k] for k in SNAPSHOT_KEYS}}


def write_golden(path: Path, snap: dict[str, Any]) -> None:
    write_json(path, snap, "golden file")


def read_golden(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise GraphoptError(f"{path}: golden file not found (create it with --update)")
    try:
        golden = json.loads(read_text(path, "golden JSON file"))
    except (ValueError, RecursionError) as exc:
        raise GraphoptError(f"{path}: not a readable golden JSON ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(golden, dict) or "ops" not in golden:
        raise GraphoptError(f"{path}: not a golden file (no 'ops')")
    _check_schema(path, golden)
    return golden


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_schema(path: Path, golden: dict[str, Any]) -> None:
    """What `--update` writes: ops {op: count}, params count, inputs/outputs [{name, shape, dtype}]."""
    ops = golden["ops"]
    if not isinstance(ops, dict) or not all(isinstance(k, str) and _count(v) for k, v in ops.items()):
        raise GraphoptError(f"{path}: 'ops' must map op names to counts (write it with --update)")
    if "params" in golden and not _count(golden["params"]):
        raise GraphoptError(f"{path}: 'params' must be a non-negative integer")
    for key in ("inputs", "outputs"):
        if key not in golden:
            continue
        entries = golden[key]
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and {"name", "shape", "dtype"} <= set(e) for e in entries
        ):
            raise GraphoptError(f"{path}: '{key}' must be a list of {{name, shape, dtype}} entries")


def compare_golden(
    snap: dict[str, Any], golden: dict[str, Any], allow_decrease: bool
) -> list[dict[str, Any]]:
    """Every difference; `allowed` marks decreases of ops/params when `allow_decrease` is set."""
    diffs: list[dict[str, Any]] = []

    def count(what: str, model: int, gold: int) -> None:
        if model != gold:
            kind = "increase" if model > gold else "decrease"
            diffs.append(
                {
                    "what": what,
                    "golden": gold,
                    "model": model,
                    "kind": kind,
                    "allowed": kind == "decrease" and allow_decrease,
                }
            )

    for op in sorted(set(snap["ops"]) | set(golden["ops"])):
        count(f"op {op}", snap["ops"].get(op, 0), int(golden["ops"].get(op, 0)))
    if "params" in golden:
        count("params", snap["params"], int(golden["params"]))
    for key in ("inputs", "outputs"):
        if key not in golden:
            continue
        model_io = [(e["name"], e["shape"], e["dtype"]) for e in snap[key]]
        gold_io = [(e["name"], e["shape"], e["dtype"]) for e in golden[key]]
        if model_io != gold_io:
            diffs.append(
                {
                    "what": key,
                    "golden": _io_text(gold_io),
                    "model": _io_text(model_io),
                    "kind": "changed",
                    "allowed": False,
                }
            )
    return diffs


@dataclass
class GoldenCheck:
    """A model against its golden snapshot: ok unless a difference is not allowed."""

    model: str
    golden: str
    differences: list[dict[str, Any]]
    updated: bool = False

    @property
    def ok(self) -> bool:
        return all(d["allowed"] for d in self.differences)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "golden": self.golden,
            "updated": self.updated,
            "differences": self.differences,
        }


def _io_text(entries: list[tuple[str, Any, str]]) -> str:
    return "; ".join(f"{n} {s} {d}" for n, s, d in entries)
