"""Targets: a runtime, a precision and a CPU — and where a figure about their artifacts was computed.

A figure counts for a target only when the target's arithmetic computed it: this host when it is of
the target's kind (x86 for `x86-ort`, an Arm CPU for `pi5-*`), else it is a host figure and says so.
Under qemu-user emulation (benchmarks/arm64) the kernels are the Pi's, so accuracy is the Pi's, but
the clock is not: emulated time says nothing about the Pi's speed.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

# Set by benchmarks/arm64/run inside its root: the CPU is emulated (qemu-user -cpu cortex-a76).
EMULATION_ENV = "GRAPHOPT_EMULATED"


def host_arch() -> str:
    """`arm` or `x86` (or the machine name for anything else)."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64") or machine.startswith("armv"):
        return "arm"
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    return machine


def emulated() -> str | None:
    """What emulates this CPU (e.g. 'qemu-user -cpu cortex-a76'), or None on real hardware."""
    return os.environ.get(EMULATION_ENV) or None


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # ort | ncnn
    threads: int  # on the device
    int8: str | None  # quantize.target for onnxruntime int8, None when the backend's int8 is not ORT's
    nms_in_graph: bool
    device: str  # where the artifact runs
    arch: str  # the device's CPU kind: x86 | arm

    def host_threads(self) -> int:
        return max(1, min(self.threads, os.cpu_count() or 1))

    def host_is_target_kind(self) -> bool:
        """This host computes with the target's kernels (its accuracy figures are the target's)."""
        return host_arch() == self.arch

    def host_times_target(self) -> bool:
        """This host's clock says something about the target's speed: same kind, not emulated."""
        return self.host_is_target_kind() and emulated() is None

    def host_label(self) -> str:
        where = f"this host ({platform.machine()}, {os.cpu_count()} cores"
        if emulated():
            where += f", emulated: {emulated()}"
        return where + ")"

    def pi_command(self, artifact: str, data: str | None) -> str:
        """The command that measures an artifact with the target's kernels, for a report to name."""
        data_arg = f" --data {data}" if data else " --data DATA_YAML"
        backend = " --backend ncnn" if self.backend == "ncnn" else ""
        on_device = f"on the device: graphopt eval {artifact}{data_arg}{backend}"
        if self.arch != "arm" or host_arch() == "arm":  # emulated already, or no emulation to offer
            return on_device
        return (
            f"{on_device}; on this host, the Pi's kernels under emulation: "
            f"benchmarks/arm64/run graphopt eval {artifact}{data_arg}{backend}"
        )


TARGETS = {
    "x86-ort": Target("x86-ort", "ort", os.cpu_count() or 1, "x86", True, "this x86 machine", "x86"),
    "pi5-ort": Target("pi5-ort", "ort", 4, "arm", True, "Raspberry Pi 5 (Cortex-A76, 4 cores)", "arm"),
    "pi5-ncnn": Target("pi5-ncnn", "ncnn", 4, None, False, "Raspberry Pi 5 (Cortex-A76, 4 cores)", "arm"),
}


def default_target() -> str:
    return "pi5-ort" if host_arch() == "arm" else "x86-ort"
