"""Inference backends: onnxruntime or NCNN, behind one small interface. Each is imported lazily,
so a Pi needs only the one it uses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.files import MAX_MODEL_BYTES, FileProblem, input_file, read_text
from runtime.logs import quiet_onnxruntime

SIDECAR_SUFFIX = ".json"  # NCNN: model.ncnn.param + model.ncnn.bin + model.ncnn.json (metadata, blob names)


class RuntimeModelError(Exception):
    """The model cannot be opened or run by the chosen backend (a one-line, user-facing message)."""


class Backend(Protocol):
    name: str
    input_shape: tuple[int, ...]
    input_dtype: np.dtype  # what the model's input declares (float32 for NCNN)
    output_names: list[str]
    metadata: dict[str, str]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


def default_threads() -> int:
    return min(4, os.cpu_count() or 1)


def default_spinning() -> bool:
    """Whether idle inference threads spin (fastest alone on a core) or sleep. GRAPHOPT_THREAD_SPIN=0
    makes them sleep by default: for several graphopt processes sharing cores (parallel test workers,
    CI), where one's spinning threads take the cores the other computes on."""
    return os.environ.get("GRAPHOPT_THREAD_SPIN", "1") != "0"


class OrtBackend:
    name = "ort"

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool | None = None) -> None:
        spinning = default_spinning() if spinning is None else spinning
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeModelError("the ort backend needs onnxruntime: pip install onnxruntime") from exc
        try:
            input_file(path, "ONNX model (.onnx file)", MAX_MODEL_BYTES)
        except FileProblem as exc:
            raise RuntimeModelError(str(exc)) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = quiet_onnxruntime(ort)
        if not spinning:  # several sessions timed in turns: idle pools would spin on the same cores
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise RuntimeModelError(
                f"{path}: onnxruntime cannot open it ({str(exc).splitlines()[0][:200]})"
            ) from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeModelError(
                f"{path}: the runtime feeds one image input; this model has {len(inputs)} "
                f"({', '.join(i.name for i in inputs[:4])})"
            )
        inp = inputs[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        if inp.type not in ORT_DTYPES:
            raise RuntimeModelError(
                f"{path}: input '{inp.name}' is {inp.type}; the runtime feeds numeric tensors"
            )
        self.input_dtype = np.dtype(ORT_DTYPES[inp.type])
        self.output_names = [o.name for o in self.session.get_outputs()]
        if not self.output_names:
            raise RuntimeModelError(f"{path}: the model has no outputs")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.threads = opts.intra_op_num_threads

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.output_names, {self.input_name: x})
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own types: the model fails on its input
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RuntimeModelError(f"onnxruntime cannot run the model ({first[:240]})") from exc
        return dict(zip(self.output_names, values, strict=True))


# onnxruntime's input type names → numpy (the numeric types a model's input may declare)
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def ncnn_files(path: str | Path) -> tuple[Path, Path, Path]:
    """(param, bin, sidecar) for a converted model given as its folder, .param, .bin or .json."""
    p = Path(path)
    if p.is_dir():
        params = sorted(p.glob("*.param"))
        if len(params) != 1:
            raise RuntimeModelError(f"{p}: expected one .param file in the folder, found {len(params)}")
        p = params[0]
    stem = p.name
    for suffix in (".param", ".bin", SIDECAR_SUFFIX):
        stem = stem.removesuffix(suffix)
    base = p.parent / stem
    files = (
        base.with_name(stem + ".param"),
        base.with_name(stem + ".bin"),
        base.with_name(stem + SIDECAR_SUFFIX),
    )
    missing = [str(f) for f in files[:2] if not f.exists()]
    if missing:
        raise RuntimeModelError(f"NCNN model files missing: {', '.join(missing)}")
    try:
        input_file(files[0], "NCNN .param file")
        input_file(files[1], "NCNN .bin file", MAX_MODEL_BYTES)
    except FileProblem as exc:
        raise RuntimeModelError(str(exc)) from None
    return files


class NcnnBackend:
    name = "ncnn"
    input_dtype = np.dtype(np.float32)  # ncnn.Mat holds float32

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        fp16: bool | None = None,
        spinning: bool | None = None,
    ) -> None:
        spinning = default_spinning() if spinning is None else spinning
        try:
            import ncnn
        except ImportError as exc:
            raise RuntimeModelError("the ncnn backend needs the ncnn package: pip install ncnn") from exc
        param, weights, sidecar = ncnn_files(path)
        info = _read_sidecar(sidecar)
        self.net = ncnn.Net()
        self.threads = threads or default_threads()
        self.net.opt.num_threads = self.threads
        if not spinning:  # its OpenMP threads would busy-wait 20 ms after each run, on the cores others time on
            self.net.opt.openmp_blocktime = 0
        use_fp16 = bool(info.get("fp16", False)) if fp16 is None else fp16
        self.net.opt.use_fp16_packed = use_fp16
        self.net.opt.use_fp16_storage = use_fp16
        self.net.opt.use_fp16_arithmetic = use_fp16
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise RuntimeModelError(f"{param}: ncnn cannot load the model")
        self._ncnn = ncnn
        inputs = info.get("inputs") or [{"name": "in0", "shape": [1, 3, -1, -1]}]
        outputs = info.get("outputs") or [{"name": "out0", "onnx_name": "output0", "shape": None}]
        try:
            self.input_blob = str(inputs[0]["name"])
            self.input_shape = tuple(int(d) for d in inputs[0]["shape"])
            self._outputs = [
                (str(o["name"]), str(o.get("onnx_name", o["name"])), _shape(o.get("shape"))) for o in outputs
            ]
            self.output_names = [onnx_name for _, onnx_name, _ in self._outputs]
            self.metadata = {
                str(k): v if isinstance(v, str) else json.dumps(v) for k, v in info.get("metadata", {}).items()
            }
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise RuntimeModelError(f"{sidecar}: malformed NCNN sidecar ({type(exc).__name__}: {exc})") from None

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        ex = self.net.create_extractor()
        ex.input(self.input_blob, self._ncnn.Mat(np.ascontiguousarray(x[0])))
        out = {}
        for blob, onnx_name, shape in self._outputs:
            ret, mat = ex.extract(blob)
            if ret != 0:
                raise RuntimeModelError(f"ncnn could not compute output '{blob}'")
            arr = np.array(mat)
            out[onnx_name] = arr.reshape(shape) if shape else arr[None]  # NCNN drops the batch axis
        return out


def _shape(raw: Any) -> list[int] | None:
    return None if raw is None else [int(d) for d in raw]


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The converter's JSON sidecar (metadata, blob names), or {} when there is none."""
    if not path.exists():
        return {}
    try:
        info = json.loads(read_text(path, "NCNN sidecar (.json)"))
    except FileProblem as exc:
        raise RuntimeModelError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise RuntimeModelError(f"{path}: not a readable NCNN sidecar ({str(exc)[:120]})") from None
    if not isinstance(info, dict):
        raise RuntimeModelError(f"{path}: not an NCNN sidecar (expected a JSON object)")
    return info


def open_backend(
    model: str | Path, backend: str | None = None, threads: int | None = None, spinning: bool | None = None
) -> Backend:
    """`spinning=False`: idle threads sleep (for timing several models in turns); None: `default_spinning()`."""
    p = Path(model)
    if not p.exists():
        raise RuntimeModelError(f"{p}: no such file or folder")
    kind = backend or ("ncnn" if p.is_dir() or p.suffix in (".param", ".bin") else "ort")
    if kind == "ort":
        if p.is_dir():
            raise RuntimeModelError(f"{p}: a folder; the ort backend takes an .onnx file")
        return OrtBackend(p, threads, spinning)
    if kind == "ncnn":
        if p.suffix == ".onnx":
            raise RuntimeModelError(
                f"{p}: an ONNX file; convert it first: graphopt convert {p} --to ncnn -o DIR"
            )
        return NcnnBackend(p, threads, spinning=spinning)
    raise RuntimeModelError(f"unknown backend '{kind}' (ort or ncnn)")
