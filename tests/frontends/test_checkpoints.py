"""Checkpoint families, trust gating and errors (fixtures made here; real checkpoints in test_real_export)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="needs PyTorch (the exporter)")

import torch  # noqa: E402

from frontends import export, load_checkpoint  # noqa: E402
from frontends.zoo import yolov5_tiny, yolov9_dual_tiny  # noqa: E402
from graphopt.core.errors import GraphoptError  # noqa: E402
from graphopt.core.model import read_metadata  # noqa: E402
from graphopt.core.ort_session import session  # noqa: E402
from tests.fake_repo import repo_importable, save_as_repo_checkpoint  # noqa: E402
from tests.helpers import run_cli, sha256  # noqa: E402

IMGSZ = 128


class Custom(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_yolov5_checkpoint_loads_without_running_its_code(
    tmp_path: Path, record_torch_load: list[bool]
) -> None:
    zoo = yolov5_tiny()
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = zoo.float()(x).numpy()
    ckpt = save_as_repo_checkpoint(zoo, tmp_path / "repo", tmp_path / "v5.pt")
    assert "models" not in sys.modules
    loaded = load_checkpoint(ckpt)
    assert loaded.family == "yolov5" and loaded.head == "yolov5"
    assert loaded.names[0] == "class0" and loaded.strides == [8, 16, 32]
    assert "models" not in sys.modules  # the repo's code was never imported
    assert record_torch_load and all(record_torch_load)  # weights_only=True only
    export(ckpt, tmp_path / "v5.onnx", imgsz=IMGSZ)
    got = session(onnx.load(str(tmp_path / "v5.onnx"))).run(None, {"images": x.numpy()})[0]
    # the checkpoint was saved in fp16 like real ones: compare with the fp16-rounded weights' tolerance
    np.testing.assert_allclose(got, expected, atol=0.5, rtol=0.02)


def test_yolov5_with_unknown_class_needs_repo(tmp_path: Path) -> None:
    ckpt = save_as_repo_checkpoint(
        yolov5_tiny(), tmp_path / "repo", tmp_path / "v5.pt", replace={"Conv": "GhostConv"}
    )
    with pytest.raises(GraphoptError, match=r"does not rebuild \(models.common.GhostConv\).*--repo.*--trust"):
        load_checkpoint(ckpt)
    with pytest.raises(GraphoptError, match="refusing to unpickle.*--trust"):
        load_checkpoint(ckpt, repo=tmp_path / "repo")
    loaded = load_checkpoint(ckpt, repo=tmp_path / "repo", trust=True)
    assert loaded.family == "yolov5"


def test_yolov9_repo_dual_checkpoint(tmp_path: Path, record_torch_load: list[bool]) -> None:
    dual = yolov9_dual_tiny()
    ckpt = save_as_repo_checkpoint(dual, tmp_path / "repo", tmp_path / "v9.pt", top="DetectionModel")
    with pytest.raises(GraphoptError, match="needs its training code: pass --repo"):
        load_checkpoint(ckpt)
    with pytest.raises(GraphoptError, match="refusing to unpickle.*arbitrary code.*--trust"):
        load_checkpoint(ckpt, repo=tmp_path / "repo")
    assert not any(w is False for w in record_torch_load)  # nothing unpickled fully so far
    report = export(ckpt, tmp_path / "v9.onnx", imgsz=IMGSZ, repo=tmp_path / "repo", trust=True)
    model = onnx.load(str(tmp_path / "v9.onnx"))
    assert [o.name for o in model.graph.output] == ["output0", "output1"]
    assert read_metadata(model)["graphopt.main_output"] == "output1"
    assert report.family == "yolov9-repo"


def test_unknown_family(tmp_path: Path) -> None:
    path = tmp_path / "custom.pt"
    torch.save({"model": Custom()}, path)
    with pytest.raises(
        GraphoptError, match=r"unknown checkpoint family \(it references [\w.]*test_checkpoints.Custom\)"
    ):
        load_checkpoint(path)


def test_state_dict_only(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(Custom().state_dict(), path)
    with pytest.raises(GraphoptError, match="holds only weights"):
        load_checkpoint(path)


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_checkpoint(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.pt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        torch.save({"model": Custom()}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(b"")
    with pytest.raises(GraphoptError, match="corrupt|not a PyTorch checkpoint"):
        load_checkpoint(path)


def _one_line_error(result: object) -> str:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_cli_export_errors(tmp_path: Path) -> None:
    custom = tmp_path / "custom.pt"
    torch.save({"model": Custom()}, custom)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip")
    v9 = save_as_repo_checkpoint(
        yolov9_dual_tiny(), tmp_path / "repo", tmp_path / "v9.pt", top="DetectionModel"
    )
    before = {p: sha256(p) for p in (custom, corrupt, v9)}
    out = tmp_path / "o.onnx"
    assert "unknown checkpoint family" in _one_line_error(run_cli("export", custom, "-o", out))
    assert "corrupt" in _one_line_error(run_cli("export", corrupt, "-o", out))
    line = _one_line_error(run_cli("export", v9, "-o", out, "--repo", tmp_path / "repo"))
    assert "refusing to unpickle" in line and "--trust" in line
    assert "no such file" in _one_line_error(run_cli("export", tmp_path / "none.pt", "-o", out))
    assert "bad --imgsz" in _one_line_error(run_cli("export", custom, "-o", out, "--imgsz", "big"))
    assert not out.exists()
    assert {p: sha256(p) for p in before} == before


class Fraction:
    """Not an inert type graphopt allow-lists: loading it needs full unpickling."""

    def __init__(self, value: float) -> None:
        self.value = value


def test_yolov5_with_a_foreign_object_needs_trust_but_not_the_repo(tmp_path: Path) -> None:
    zoo = yolov5_tiny()
    ckpt = save_as_repo_checkpoint(zoo, tmp_path / "repo", tmp_path / "v5.pt")
    import zipfile

    extra = tmp_path / "v5-opt.pt"
    with repo_importable(tmp_path / "repo"):
        model = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
        torch.save({"model": model, "opt": Fraction(0.5)}, extra)
    assert zipfile.is_zipfile(extra)
    with pytest.raises(GraphoptError, match=r"refusing to unpickle.*Fraction.*--trust"):
        load_checkpoint(extra)
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]
    loaded = load_checkpoint(extra, trust=True)  # no --repo: yolov5's classes map onto the zoo
    assert loaded.family == "yolov5"
    assert "models" not in sys.modules


def test_inert_training_options_load_without_trust(tmp_path: Path, record_torch_load: list[bool]) -> None:
    """What yolov5's train.py pickles besides the model: paths, numpy arrays and scalars, a Namespace."""
    import argparse
    import pathlib

    ckpt = save_as_repo_checkpoint(yolov5_tiny(), tmp_path / "repo", tmp_path / "v5.pt")
    extra = tmp_path / "v5-train.pt"
    with repo_importable(tmp_path / "repo"):
        model = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
        torch.save(
            {
                "model": model,
                "opt": {"save_dir": pathlib.PosixPath("runs/train/exp"), "weights": pathlib.PurePosixPath("a.pt")},
                "results": np.arange(6, dtype=np.float32).reshape(2, 3),
                "best_fitness": np.float64(0.42),
                "args": argparse.Namespace(imgsz=640, hyp={"lr0": 0.01}),
            },
            extra,
        )
    record_torch_load.clear()
    loaded = load_checkpoint(extra)
    assert loaded.family == "yolov5" and all(record_torch_load)


def test_object_arrays_are_not_inert(tmp_path: Path) -> None:
    ckpt = save_as_repo_checkpoint(yolov5_tiny(), tmp_path / "repo", tmp_path / "v5.pt")
    extra = tmp_path / "v5-obj.pt"
    with repo_importable(tmp_path / "repo"):
        model = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
        torch.save({"model": model, "x": np.array([Custom], dtype=object)}, extra)
    with pytest.raises(GraphoptError):
        load_checkpoint(extra)


def test_repo_importing_a_missing_package_says_to_install_it(tmp_path: Path) -> None:
    dual = yolov9_dual_tiny()
    ckpt = save_as_repo_checkpoint(dual, tmp_path / "repo", tmp_path / "v9.pt", top="DetectionModel")
    yolo = tmp_path / "repo" / "models" / "yolo.py"
    yolo.write_text("import notinstalledpkg_graphopt_test\n" + yolo.read_text())
    with pytest.raises(GraphoptError, match="imports 'notinstalledpkg_graphopt_test', which is not installed.*requirements"):
        load_checkpoint(ckpt, repo=tmp_path / "repo", trust=True)


def test_a_repos_namespace_package_is_forgotten_even_when_sys_path_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyTorch_YOLOv4's models/ has no __init__.py. Another folder with a `models` namespace on
    sys.path (onnxruntime adds its transformers/ folder) must not keep it alive after a load."""
    import os

    import onnxruntime

    from frontends.checkpoint import _on_sys_path

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(onnxruntime.__file__), "transformers"))
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "layers.py").write_text("X = 1\n")
    with _on_sys_path(repo):
        import models.layers  # noqa: F401

    assert "models" not in sys.modules and "models.layers" not in sys.modules
