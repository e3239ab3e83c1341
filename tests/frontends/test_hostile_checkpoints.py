"""Crafted checkpoints: no code chosen by the file runs without --trust (issue 10, defect 1).

Each hostile file carries a side effect (a marker file) that would appear if its code ran; each test
asserts the exit code, the one `error:` line, the input's sha256 unchanged, no marker and no output.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs PyTorch (the exporter)")

import torch  # noqa: E402

from frontends.families import yolov5 as yolov5_family  # noqa: E402
from frontends.zoo import yolov5_tiny  # noqa: E402
from tests.fake_repo import save_as_repo_checkpoint  # noqa: E402
from tests.helpers import REPO, run_cli, sha256  # noqa: E402


class Touch:
    """A test class whose constructor has a side effect: stands in for a library class whose
    constructor loads another file with full unpickling (e.g. a backend wrapper given a path)."""

    def __init__(self, marker: str) -> None:
        Path(marker).touch()


class TouchModule(torch.nn.Module):
    def __init__(self, marker: str = "") -> None:
        super().__init__()
        if marker:
            Path(marker).touch()


class ReduceTo:
    """Pickles as REDUCE(func, args): what a hostile file does to call something on load."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _yolov5_ckpt(tmp_path: Path, **extra: object) -> Path:
    """A real-looking YOLOv5 checkpoint (zoo model under yolov5's class names) with extra entries."""
    model = yolov5_tiny()
    for name, value in extra.items():
        setattr(model, name, value)
    return save_as_repo_checkpoint(model, tmp_path / "repo", tmp_path / "v5.pt")


def _assert_refused(tmp_path: Path, ckpt: Path, marker: Path, *expect: str, hostile: bool = True) -> str:
    before = sha256(ckpt)
    out = tmp_path / "out.onnx"
    result = run_cli("export", ckpt, "-o", out)
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for text in expect:
        assert text in lines[0], lines[0]
    assert not marker.exists(), "code from the checkpoint ran"
    assert not out.exists()
    assert sha256(ckpt) == before
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]
    # the .pt inspector must not run it either
    inspected = subprocess.run(
        [sys.executable, str(REPO / "tools" / "inspect_pt.py"), str(ckpt), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not marker.exists(), "code from the checkpoint ran in tools/inspect_pt.py"
    if inspected.returncode == 0:
        assert json.loads(inspected.stdout)["loaded"] is not hostile
    else:
        assert inspected.returncode == 2 and inspected.stderr.startswith("error: ")
    return lines[0]


def test_constructor_gadget_of_an_allow_listed_class_is_not_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's weights_only unpickler calls allow-listed classes on REDUCE: our stand-ins refuse."""
    marker = tmp_path / "ran"
    monkeypatch.setitem(yolov5_family.STANDINS, f"{__name__}.TouchModule", TouchModule)
    ckpt = _yolov5_ckpt(tmp_path, gadget=ReduceTo(TouchModule, str(marker)))
    line = _assert_refused(tmp_path, ckpt, marker, "calls the constructor", "--trust")
    assert "TouchModule" in line


def test_library_class_constructor_gadget(tmp_path: Path) -> None:
    """REDUCE on a torch.nn class (allowed as plain module state) is refused too."""
    ckpt = _yolov5_ckpt(tmp_path, gadget=ReduceTo(torch.nn.Conv2d, 3, 3, 1))
    _assert_refused(tmp_path, ckpt, tmp_path / "never", "calls the constructor of torch.nn.modules.conv.Conv2d")


def test_autobackend_style_gadget_is_not_allow_listed(tmp_path: Path) -> None:
    """A library wrapper that loads another file (Ultralytics' AutoBackend) is outside the allow-list."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.tasks import DetectionModel

    marker = tmp_path / "ran"
    inner = tmp_path / "inner.pt"
    torch.save({"x": ReduceTo(os.system, f"touch {marker}")}, inner)
    ckpt = tmp_path / "ultra.pt"
    torch.save({"model": DetectionModel.__new__(DetectionModel), "x": ReduceTo(AutoBackend, str(inner))}, ckpt)
    _assert_refused(tmp_path, ckpt, marker, "refusing to unpickle", "AutoBackend", "--trust")


def test_reduce_to_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ckpt = _yolov5_ckpt(tmp_path, payload=ReduceTo(os.system, f"touch {marker}"))
    _assert_refused(tmp_path, ckpt, marker, "system", "--trust")


def test_hooks_and_classes_in_module_state_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = yolov5_tiny()
    model.model[0]._forward_pre_hooks[0] = torch.nn.Conv2d  # called as hook(module, args) on forward
    ckpt = save_as_repo_checkpoint(model, tmp_path / "repo", tmp_path / "hooks.pt")
    _assert_refused(tmp_path, ckpt, marker, "installs hooks")
    model = yolov5_tiny()
    model.model[0].forward = torch.nn.Conv2d  # a class as an attribute would be called with the input
    (tmp_path / "hooks.pt").unlink()
    ckpt = save_as_repo_checkpoint(model, tmp_path / "repo", tmp_path / "forward.pt")
    _assert_refused(tmp_path, ckpt, marker, "not plain module state")


def _rewrite_zip(src: Path, dst: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


def test_nested_checkpoint_with_a_second_pickle(tmp_path: Path) -> None:
    """An archive holding two pickles: which one torch reads must not be ours to guess."""
    marker = tmp_path / "ran"
    evil = io.BytesIO()
    torch.save({"x": ReduceTo(os.system, f"touch {marker}")}, evil)
    with zipfile.ZipFile(io.BytesIO(evil.getvalue())) as z:
        evil_pickle = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    good = _yolov5_ckpt(tmp_path)
    nested = _rewrite_zip(good, tmp_path / "nested.pt", {"v5/inner/data.pkl": evil_pickle})
    _assert_refused(tmp_path, nested, marker, "holds 2 pickles")


def test_checkpoint_inside_a_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = io.BytesIO()
    torch.save({"model": ReduceTo(os.system, f"touch {marker}")}, evil)
    outer = tmp_path / "outer.pt"
    torch.save({"model": evil.getvalue()}, outer)  # a .pt stored as bytes in another
    _assert_refused(tmp_path, outer, marker, "holds only weights")


def test_zip_entries_that_climb_out_are_refused(tmp_path: Path) -> None:
    good = _yolov5_ckpt(tmp_path)
    escaping = _rewrite_zip(good, tmp_path / "escape.pt", {"../escaped.txt": b"x", "/abs.txt": b"y"})
    _assert_refused(tmp_path, escaping, tmp_path / "never", "climbs out")
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_real_checkpoints_still_load_as_plain_state(tmp_path: Path) -> None:
    """The guards are gone after loading: the model's classes are the real ones."""
    from frontends import load_checkpoint
    from frontends.zoo import blocks

    loaded = load_checkpoint(_yolov5_ckpt(tmp_path))
    classes = {type(m) for m in loaded.module.modules()}
    assert blocks.Detect in classes and torch.nn.Conv2d in classes
    assert all("RestoreOnly" not in type(type(m)).__name__ for m in loaded.module.modules())


def test_checkpoint_without_layers_is_a_user_error(tmp_path: Path) -> None:
    model = yolov5_tiny()
    model.model = torch.nn.Sequential()
    ckpt = save_as_repo_checkpoint(model, tmp_path / "repo", tmp_path / "empty.pt")
    _assert_refused(tmp_path, ckpt, tmp_path / "never", "no layers", hostile=False)
