"""int8 on the real models (../shared): accuracy kept on COCO128, no collapse on YOLOv9t."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphopt.core.model import load_model, save_model
from graphopt.core.ort_session import run
from graphopt.data.feeds import FeedSource
from graphopt.eval.evaluate import evaluate
from graphopt.passes.pipeline import Pipeline
from runtime.decode import head_arrays
from tests.helpers import COCO128, need_shared


def _int8(src: Path, out: Path, target: str, **options: object) -> Path:
    data = need_shared(COCO128) / "data.yaml"
    result = Pipeline.from_passes(
        ["quantize"], {"quantize": {"target": target, **options}}, feeds=FeedSource(data, samples=2)
    ).run(load_model(src))
    save_model(result.model, out)
    return out


@pytest.mark.slow
def test_yolov5n_int8_keeps_map(yolov5n_lossless: Path, yolov5n_lossless_map: float, tmp_path: Path) -> None:
    data = need_shared(COCO128) / "data.yaml"
    fp32 = yolov5n_lossless_map
    int8 = evaluate(_int8(yolov5n_lossless, tmp_path / "int8.onnx", "arm"), data, progress=False).map50_95
    assert fp32 - int8 <= 0.010, (fp32, int8)  # acceptance: within 1.0 mAP50-95 point


def test_yolov9t_int8_does_not_collapse(yolov9t_onnx: Path, tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    save_model(Pipeline.from_recipe("lossless").run(load_model(yolov9t_onnx)).model, fp32)
    # 16 calibration images, not the default 64: the test asks "no collapse", not the best int8 (~40 CPU-s
    # less); correlation with fp32 measured 0.990 on these 8 images, 0.969 on 32 (0.984 / 0.956 with 64)
    int8 = _int8(fp32, tmp_path / "int8.onnx", "arm", samples=16)
    feeds = FeedSource(need_shared(COCO128) / "data.yaml", samples=8).feeds_for(load_model(fp32))
    a, b = run(load_model(fp32), feeds), run(load_model(int8), feeds)
    sa = np.concatenate([head_arrays(x["output0"], "anchor-free")[1].ravel() for x in a])
    sb = np.concatenate([head_arrays(x["output0"], "anchor-free")[1].ravel() for x in b])
    live = (sa > 0.01) | (sb > 0.01)
    assert live.sum() > 100
    assert np.corrcoef(sa[live], sb[live])[0, 1] > 0.9  # see the calibration note above
    assert sb.max() > 0.5 * sa.max()  # scores did not round to zero


def _peak_rss_mb(model: Path, out: Path, samples: int, images: Path) -> float:
    """Peak RSS of a fresh process quantizing `model` with `samples` calibration images."""
    import subprocess
    import sys

    from tests.helpers import REPO

    script = (
        "import sys\n"
        "from graphopt.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        # VmHWM: this process's own peak since exec. ru_maxrss would also carry the parent's RSS at
        # fork time (Linux keeps the pre-exec high-water mark), i.e. the whole test session's.
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024)\n"
    )
    args = ["optimize", str(model), "-o", str(out), "--passes", "quantize", "--no-verify", "--data", str(images)]
    args += ["--set", "quantize.target=x86", "--set", f"quantize.samples={samples}", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_calibration_memory_does_not_grow_with_samples(yolov5n_lossless: Path, tmp_path: Path) -> None:
    """Issue 10: activations are reduced image by image (the old path held ~260 MB per image)."""
    images = need_shared(COCO128) / "images" / "train2017"
    few = _peak_rss_mb(yolov5n_lossless, tmp_path / "a.onnx", 4, images)
    many = _peak_rss_mb(yolov5n_lossless, tmp_path / "b.onnx", 24, images)
    assert many < few * 1.15 + 50, (few, many)  # 20 more images would have cost ~5 GB before
    assert many < 1536, many
