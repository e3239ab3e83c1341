"""Plain data types a training checkpoint holds besides its model, allowed without `--trust`.

A yolov5 `train.py` checkpoint pickles its run's options (with `pathlib` paths), older releases
numpy arrays and scalars, some trainers an `argparse.Namespace`. torch's `weights_only` unpickler
calls an allow-listed *function or class* with arguments from the file (REDUCE), so only entries
whose call is inert are listed here, each with the reason. An entry is `(object, pickled name)`.
Nothing here reads a file, imports a module, or calls anything the file names.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import types
from typing import Any

import numpy as np


def _no_objects(dtype: np.dtype, what: str) -> np.dtype:
    if dtype.hasobject:
        # object arrays/scalars would carry arbitrary Python objects: not data we need
        raise pickle.UnpicklingError(f"{what} of Python objects is not plain data; it needs --trust")
    return dtype


def numpy_dtype(*args: Any) -> np.dtype:
    """`numpy.dtype(spec, align, copy)`: a dtype description (bool/int/float/str/…), never object."""
    return _no_objects(np.dtype(*args), "a numpy dtype")


def numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    """`numpy…multiarray.scalar(dtype, bytes)`: a number from its raw bytes, never an object scalar."""
    from numpy._core.multiarray import scalar

    _no_objects(dtype, "a numpy scalar")
    return scalar(dtype, data) if data is not None else scalar(dtype)


def numpy_reconstruct(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    """`numpy…multiarray._reconstruct(ndarray, shape, typecode)`: an empty ndarray that BUILD fills from
    raw bytes (its dtype comes through `numpy_dtype`, so never objects)."""
    from numpy._core.multiarray import _reconstruct

    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy array subtype {subtype!r} is not plain data; it needs --trust")
    return _reconstruct(subtype, shape, dtype)


def _dtype_classes() -> list[tuple[Any, str]]:
    """numpy's dtype classes (`numpy.dtypes.Float32DType`, …): BUILD restores a dtype's byte order
    and flags through them. The object dtype class is left out."""
    out = []
    for name in dir(np.dtypes):
        cls = getattr(np.dtypes, name)
        if isinstance(cls, type) and name.endswith("DType") and name != "ObjectDType":
            out.append((cls, f"numpy.dtypes.{name}"))
    return out


def allowed() -> list[tuple[Any, str]]:
    """Every inert entry as (object, pickled name), for torch's weights_only unpickler."""
    entries: list[tuple[Any, str]] = [
        # pathlib: the constructor only parses strings into parts; it never touches the file system.
        # A Windows path from a checkpoint trained on Windows loads as its pure form (same parts).
        (pathlib.PosixPath, "pathlib.PosixPath"),
        (pathlib.PurePosixPath, "pathlib.PurePosixPath"),
        (pathlib.PureWindowsPath, "pathlib.PureWindowsPath"),
        (pathlib.PureWindowsPath, "pathlib.WindowsPath"),
        # attribute bags: rebuilt with __new__ and a __dict__ update, no constructor code runs
        (argparse.Namespace, "argparse.Namespace"),
        (types.SimpleNamespace, "types.SimpleNamespace"),
        # numpy arrays and scalars as raw bytes (object dtypes refused, see above)
        (np.ndarray, "numpy.ndarray"),
        (numpy_reconstruct, "numpy.core.multiarray._reconstruct"),
        (numpy_reconstruct, "numpy._core.multiarray._reconstruct"),
        (numpy_scalar, "numpy.core.multiarray.scalar"),
        (numpy_scalar, "numpy._core.multiarray.scalar"),
        (numpy_dtype, "numpy.dtype"),
        *_dtype_classes(),
    ]
    return entries


INERT_NAMES = frozenset(name for _, name in allowed())
# Instances of these may appear as values in restored module state (checked recursively).
INERT_INSTANCES = (pathlib.PurePath, np.ndarray, np.generic, np.dtype, argparse.Namespace, types.SimpleNamespace)
