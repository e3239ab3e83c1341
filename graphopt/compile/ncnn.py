"""`graphopt convert --to ncnn`: ONNX → NCNN (.param/.bin) via pnnx, plus the JSON sidecar the runtime reads.

pnnx's converter binary writes several by-products next to its input and in its working folder
(*.pnnx.param, *_pnnx.py, *.pnnxsim.onnx, …); it runs in a temporary folder on a link to the
model, and only the NCNN pair is kept. The sidecar carries the model's graphopt metadata and the
blob ↔ ONNX name and shape mapping (pnnx names blobs in0…, out0… in graph order; NCNN drops the
batch axis, which the runtime restores from the recorded shape).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.core.errors import GraphoptError, VerificationError
from graphopt.core.fileio import atomic_write
from graphopt.core.model import checked_metadata, io_signature, load_model, read_metadata
from runtime.files import FileProblem, check_output, output_dir

# fp32 conversion must agree with onnxruntime to this fraction of each output's range; fp16 weights
# are measured and reported, not enforced (they move boxes by a pixel or two by design).
NCNN_FP32_TOLERANCE = 1e-2


def convert_to_ncnn(
    model_path: str | Path, out_dir: str | Path, fp16: bool = True, verify_image: str | Path | None = None
) -> dict[str, Any]:
    pnnx_exe, pnnx_version = _pnnx()
    src = Path(model_path)
    model = load_model(src)
    checked_metadata(model, src)  # what eval and detect would refuse is not converted either
    sig = io_signature(model)
    if len(sig["inputs"]) != 1:
        raise GraphoptError(f"{src}: NCNN conversion supports one input, the model has {len(sig['inputs'])}")
    shape = sig["inputs"][0]["shape"]
    if not shape or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise GraphoptError(f"{src}: the input shape {shape} is not static; export with a fixed --imgsz")
    _refuse_unsupported(model, src)
    out = Path(out_dir)
    try:
        output_dir(out, "output folder")
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    stem = src.name.removesuffix(".onnx")
    finals = {kind: out / f"{stem}.ncnn.{kind}" for kind in ("param", "bin", "json")}
    try:
        for kind, path in finals.items():
            check_output(path, f"NCNN .{kind} file")
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    sidecar = {
        "format": "ncnn",
        "source": src.name,
        "fp16": fp16,
        "converter": f"pnnx {pnnx_version}".strip(),
        "inputs": [
            {"name": f"in{i}", "onnx_name": e["name"], "shape": e["shape"]}
            for i, e in enumerate(sig["inputs"])
        ],
        "outputs": [
            {"name": f"out{i}", "onnx_name": e["name"], "shape": e["shape"]}
            for i, e in enumerate(sig["outputs"])
        ],
        "metadata": read_metadata(model),
        "macs": _macs(model),  # the graph's multiply-accumulates (what a Pi 5 estimate proxies from)
    }
    # Convert and verify in a temp folder; only a verified model reaches OUT (nothing is left there
    # when pnnx fails or the check does not pass).
    with tempfile.TemporaryDirectory(prefix="graphopt-pnnx-") as tmp:
        link = Path(tmp) / "model.onnx"
        os.symlink(src.resolve(), link)
        cmd = [pnnx_exe, str(link), f"inputshape=[{','.join(map(str, shape))}]f32", f"fp16={int(fp16)}"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        staged = {"param": Path(tmp) / "model.ncnn.param", "bin": Path(tmp) / "model.ncnn.bin"}
        if proc.returncode != 0 or not all(p.exists() for p in staged.values()):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise GraphoptError(f"{src}: pnnx could not convert it ({tail[0][:200]})")
        staged["json"] = Path(tmp) / "model.ncnn.json"
        staged["json"].write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
        check = _verify(model, staged["param"], fp16, verify_image)
        for kind in ("bin", "json", "param"):  # the .param last: a folder with it is complete
            atomic_write(finals[kind], lambda t, k=kind: shutil.copyfile(staged[k], t), f"NCNN .{kind} file")
    return {
        "output": str(out),
        "param": str(finals["param"]),
        "bin": str(finals["bin"]),
        "sidecar": str(finals["json"]),
        "fp16": fp16,
        **check,
    }


def _pnnx() -> tuple[str, str]:
    """pnnx's converter binary and version, found without importing the package (which imports torch)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("pnnx")
    folders = list(spec.submodule_search_locations or []) if spec else []
    exe = next((Path(f) / name for f in folders for name in ("pnnx", "pnnx.exe") if (Path(f) / name).is_file()), None)
    if exe is None:
        raise GraphoptError(
            "graphopt convert --to ncnn needs pnnx's converter: pip install --no-deps pnnx "
            "(or 'graphopt[pnnx]', which also pulls torch)"
        )
    try:
        version = importlib.metadata.version("pnnx")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return str(exe), version


def _refuse_unsupported(model: Any, src: Path) -> None:
    ops = {n.op_type for n in model.graph.node}
    if "NonMaxSuppression" in ops:
        raise GraphoptError(
            f"{src}: has NMS inside the graph, which NCNN cannot run; convert the model from before "
            "`fuse-nms` (the runtime does NMS on the host for NCNN)"
        )
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        raise GraphoptError(
            f"{src}: a QDQ (int8) ONNX model; pnnx converts float models — convert the fp32 "
            "model and quantize with ncnn's own tools"
        )


def _verify(model: Any, param: Path, fp16: bool, image: str | Path | None) -> dict[str, Any]:
    """NCNN against onnxruntime on the same input: max abs diff per output, relative to its scale."""
    from graphopt.core.ort_session import session
    from runtime.backends import NcnnBackend

    ort_sess = session(model)
    inp = ort_sess.get_inputs()[0]
    if image is not None:
        from runtime.metadata import parse_metadata
        from runtime.preprocess import Preprocess
        from runtime.sources import read_image

        frame = read_image(image)
        if frame is None:
            raise GraphoptError(f"{image}: cannot read image")
        preprocess = Preprocess.from_meta(parse_metadata(read_metadata(model)).preprocess)
        x, _ = preprocess(frame, tuple(inp.shape[2:]))
        described = f"image {Path(image).name}"
    else:
        x = np.random.default_rng(0).random(inp.shape, dtype=np.float32)
        described = "seeded random input"
    names = [o.name for o in ort_sess.get_outputs()]
    ref = dict(zip(names, ort_sess.run(names, {inp.name: x}), strict=True))
    got = NcnnBackend(param, threads=2).run(x)
    diffs, rel = {}, 0.0
    for name, value in ref.items():
        if name not in got or got[name].size != value.size:
            raise VerificationError(
                f"NCNN output '{name}' has shape {got.get(name, np.zeros(0)).shape}, "
                f"ONNX {value.shape}; nothing was written"
            )
        d = float(np.abs(got[name].reshape(value.shape) - value).max())
        diffs[name] = d
        rel = max(rel, d / max(float(np.abs(value).max()), 1e-6))
    if not fp16 and not rel <= NCNN_FP32_TOLERANCE:
        raise VerificationError(
            f"NCNN differs from onnxruntime by {max(diffs.values()):.3g} "
            f"({rel:.2%} of the output range) on {described}; nothing was written"
        )
    return {"verified_on": described, "max_abs_diff": diffs, "max_rel_to_range": rel}


def _macs(model: object) -> int | None:
    from graphopt.core.macs import macs_summary

    try:
        return int(macs_summary(model)["macs"])  # type: ignore[arg-type,call-overload]
    except Exception:  # noqa: BLE001 - a size we cannot infer is left out, never a failed conversion
        return None
