"""Latency statistics and the Pi's health: CPU temperature and throttle flags (None elsewhere)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

THERMAL_ROOT = Path("/sys/class/thermal")
# Raspberry Pi firmware exposes the same bits as `vcgencmd get_throttled` here (newer kernels).
THROTTLE_SYSFS = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
    16: "under-voltage occurred",
    17: "arm frequency capping occurred",
    18: "throttling occurred",
    19: "soft temperature limit occurred",
}


def latency_summary(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {k: None for k in ("avg_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "fps")}
    arr = np.asarray(ms, dtype=np.float64)
    avg = float(arr.mean())
    return {
        "avg_ms": avg,
        "min_ms": float(arr.min()),
        "max_ms": float(arr.max()),
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "fps": 1000.0 / avg if avg > 0 else None,
    }


def cpu_temp_c(root: Path = THERMAL_ROOT) -> float | None:
    """CPU temperature in °C from the thermal zone named like the CPU (the first zone otherwise)."""
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None
    preferred = [
        z for z in zones if _read(z / "type") and ("cpu" in _read(z / "type") or "soc" in _read(z / "type"))
    ]
    for zone in preferred or zones:
        raw = _read(zone / "temp")
        try:
            return int(raw) / 1000.0
        except (TypeError, ValueError):
            continue
    return None


def throttled(sysfs: Path = THROTTLE_SYSFS) -> dict[str, Any] | None:
    """The Pi's throttle flags ({'raw': '0x50000', 'now': [...], 'since_boot': [...]}); None off a Pi."""
    raw = _read(sysfs)
    if raw is None and shutil.which("vcgencmd"):
        try:
            out = subprocess.run(
                ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2
            ).stdout
            raw = out.strip().partition("=")[2] or None
        except (OSError, subprocess.SubprocessError):
            raw = None
    if raw is None:
        return None
    try:
        value = int(raw, 16)  # both vcgencmd and the sysfs file print hex
    except ValueError:
        return None
    flags = [name for bit, name in THROTTLE_BITS.items() if value & (1 << bit)]
    return {
        "raw": hex(value),
        "now": [f for f in flags if "occurred" not in f],
        "since_boot": [f for f in flags if "occurred" in f],
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def interleaved(runners: dict[str, Callable[[], object]], rounds: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds per call of each runner, the runners taking turns every round: a shared, noisy
    machine then slows every model alike, and per-round ratios between them stay meaningful."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    return times

