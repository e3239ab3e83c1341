"""Model I/O at the edges of the pipeline: load, atomic save, metadata, and summaries."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import atomic_write
from runtime import files

# Serialized protobuf cannot exceed 2 GB; above this, tensors go to an external data file.
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Index/shape tensors are bookkeeping, not learned parameters.
_NON_PARAM_DTYPES = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL, onnx.TensorProto.STRING}


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX model (with its external data), turning every unusable input into GraphoptError."""
    try:
        p = files.input_file(path, "ONNX model (.onnx file)", files.MAX_MODEL_BYTES)
    except files.FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        raise GraphoptError(f"{p}: not a valid ONNX model ({_first_line(exc)})") from exc
    except OSError as exc:
        raise GraphoptError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    # Protobuf parses many arbitrary byte strings "successfully": insist on an actual graph.
    if not model.opset_import or (not model.graph.node and not model.graph.output):
        raise GraphoptError(f"{p}: not an ONNX model (no opset or graph found)")
    if not model.graph.output:
        raise GraphoptError(f"{p}: the model has no outputs")
    if _uses_external_data(model):
        _load_external_data(model, p)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RecursionError) as exc:
        raise GraphoptError(f"{p}: invalid ONNX model ({_first_line(exc)})") from exc
    return model


# Older opsets lack what the passes and onnxruntime's quantizer build on (opset-11 Resize, Pad and
# Slice with tensor inputs, …); onnx's version converter upgrades most models, so say how.
MIN_OPSET = 11


def check_opset(model: onnx.ModelProto, name: str = "the model") -> None:
    """The model's opset is one the passes support and the installed onnx knows (an opset from the
    future fails here, not inside the first pass)."""
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and opset > newest:
        raise GraphoptError(
            f"{name}: opset {opset} is newer than the installed onnx knows (up to {newest}); re-export it "
            "with a lower opset (graphopt export --opset 17)"
        )
    if opset is not None and opset < MIN_OPSET:
        raise GraphoptError(
            f"{name}: opset {opset} is older than graphopt's passes support (>= {MIN_OPSET}); re-export it with "
            'a newer opset, or upgrade it: python -c "import onnx, onnx.version_converter as v; '
            "onnx.save(v.convert_version(onnx.load('IN.onnx'), 13), 'OUT.onnx')\""
        )


def _load_external_data(model: onnx.ModelProto, p: Path) -> None:
    """Tensors stored beside the model: only regular files inside the model's folder, noted as inputs."""
    base = p.parent.resolve()
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(base):
            raise GraphoptError(
                f"{p}: tensor '{tensor.name}' points at external data outside the model's folder "
                f"('{location}'); refusing to read it"
            )
        try:
            files.input_file(target, "external data file", max_bytes=None)
        except files.FileProblem as exc:
            raise GraphoptError(f"{p}: external data of tensor '{tensor.name}': {exc}") from None
    try:
        onnx.load_external_data_for_model(model, str(base))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise GraphoptError(f"{p}: external data missing or unreadable ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when both paths name one file (also through links or relative paths)."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike[str], *, input_path: str | os.PathLike[str] | None = None
) -> Path:
    """Write `model` atomically (temp file in the same folder + rename); never over an input."""
    out = Path(path)
    if input_path is not None:
        files.note_input(input_path)
    if model.ByteSize() <= _EXTERNAL_DATA_THRESHOLD:
        return atomic_write(out, lambda tmp: onnx.save_model(model, str(tmp)), "model")
    # Over 2 GB protobuf cannot hold the tensors: they go to OUT.data next to it. Both files are
    # written in a temp folder beside OUT (the model records the data file's final name) and renamed
    # into place, the data first.
    data = out.with_name(out.name + ".data")
    try:
        files.check_output(data, "model's external data")
    except files.FileProblem as exc:
        raise GraphoptError(str(exc)) from None

    def write_with_data(tmp: Path) -> None:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            staged = onnx.ModelProto()
            staged.CopyFrom(model)
            onnx.save_model(
                staged,
                str(staging / out.name),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data.name,
            )
            os.replace(staging / out.name, tmp)
            os.replace(staging / data.name, data)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    return atomic_write(out, write_with_data, "model")


# --- metadata -------------------------------------------------------------------------------------


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def checked_metadata(model: onnx.ModelProto, name: str | os.PathLike[str]) -> Any:
    """The model's metadata as the runtime reads it (runtime.metadata.ModelMeta): the one check every
    command that reads metadata applies — convert and compile as eval, detect and bench do. A malformed
    `graphopt.*` value is MetadataError (one line, naming the model)."""
    from runtime.metadata import MetadataError, parse_metadata

    try:
        return parse_metadata(read_metadata(model))
    except MetadataError as exc:
        raise MetadataError(f"{name}: {exc}") from None


def write_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    """Set metadata keys (non-string values are stored as JSON); other keys are kept."""
    current = read_metadata(model)
    for key, value in values.items():
        current[key] = value if isinstance(value, str) else json.dumps(value)
    del model.metadata_props[:]
    for key, value in current.items():
        model.metadata_props.add(key=key, value=value)


# --- summaries ------------------------------------------------------------------------------------


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Top-level node count per op type (custom domains as `domain:Op`), sorted by name."""
    counts = Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}" for n in model.graph.node
    )
    return dict(sorted(counts.items()))


def _stored_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors.extend(a.t for a in node.attribute if a.name == "value" and a.HasField("t"))
    return tensors


def param_count(model: onnx.ModelProto) -> int:
    """Elements of stored tensors (initializers and Constant nodes), shape/index (int64, bool) excluded."""
    return int(
        sum(
            int(np.prod(t.dims, dtype=np.int64))
            for t in _stored_tensors(model)
            if t.data_type not in _NON_PARAM_DTYPES
        )
    )


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str] | None:
    ttype = value_info.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]


def _dtype_name(value_info: onnx.ValueInfoProto) -> str:
    elem = value_info.type.tensor_type.elem_type
    if elem == 0:
        return "unknown"
    return str(helper.tensor_dtype_to_np_dtype(elem))


def io_signature(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs (initializers excluded) and outputs: name, shape, dtype."""
    init_names = {t.name for t in model.graph.initializer}
    sig: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    for key, infos in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        for vi in infos:
            if key == "inputs" and vi.name in init_names:
                continue
            sig[key].append({"name": vi.name, "shape": _dims(vi), "dtype": _dtype_name(vi)})
    return sig


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def summarize(model: onnx.ModelProto) -> dict[str, Any]:
    """What `graphopt inspect --json` prints (keys are a contract)."""
    from graphopt.core.macs import macs_summary

    ops = op_histogram(model)
    sig = io_signature(model)
    return {
        "ops": ops,
        "nodes": sum(ops.values()),
        "params": param_count(model),
        "inputs": sig["inputs"],
        "outputs": sig["outputs"],
        "opset": default_opset(model),
        "metadata": read_metadata(model),
        **macs_summary(model),
    }


def diff_summaries(a: dict[str, Any], b: dict[str, Any], size_a: int, size_b: int) -> dict[str, Any]:
    """Op counts, nodes, params and file size of A vs B (what `graphopt diff --json` prints)."""

    def row(x: int, y: int) -> dict[str, int]:
        return {"a": x, "b": y, "delta": y - x}

    ops = sorted(set(a["ops"]) | set(b["ops"]))
    by_op = sorted(set(a.get("macs_by_op", {})) | set(b.get("macs_by_op", {})))
    return {
        "ops": {op: row(a["ops"].get(op, 0), b["ops"].get(op, 0)) for op in ops},
        "nodes": row(a["nodes"], b["nodes"]),
        "params": row(a["params"], b["params"]),
        "macs": row(a.get("macs", 0), b.get("macs", 0)),
        "macs_by_op": {
            op: row(a.get("macs_by_op", {}).get(op, 0), b.get("macs_by_op", {}).get(op, 0)) for op in by_op
        },
        "size_bytes": row(size_a, size_b),
    }
