"""Run models on given input tensors and save their raw outputs: the same tensors on x86 and inside the
arm64 root, so what differs is the kernels alone (preprocessing is out of the comparison).

    python benchmarks/arm64/same_tensor.py INPUTS.npz OUT.npz NAME=MODEL[:BACKEND] ...

Imports only the runtime (numpy + one backend), so it runs in the root's runtime install.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.backends import open_backend  # noqa: E402


def main(argv: list[str]) -> None:
    inputs, out, *models = argv
    tensors = np.load(inputs)
    saved: dict[str, np.ndarray] = {}
    for spec in models:
        name, _, rest = spec.partition("=")
        path, _, backend = rest.partition(":")
        session = open_backend(path, backend or "ort", threads=2)
        started = time.perf_counter()
        for key in sorted(tensors.files):
            for output, value in session.run(tensors[key]).items():
                saved[f"{name}/{key}/{output}"] = value
        print(f"{name}: {len(tensors.files)} input(s) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    np.savez_compressed(out, **saved)


if __name__ == "__main__":
    main(sys.argv[1:])
