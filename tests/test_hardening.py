"""A careless or hostile user, every command (issue 10, defects 2 and 5–8).

Each case asserts the exit code, the single `error:` line, every input's sha256 unchanged and no
stray files. Fixtures are built here (the demo model needs no torch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml

from tests.helpers import REPO, need_pnnx, run_cli, sha256
from tools.make_demo_model import build_demo_model

NAMES = {0: "a", 1: "b", 2: "c"}


def _error_line(result: object, code: int = 2) -> str:
    assert result.code == code, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "internal error" not in lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    path = tmp_path / "demo.onnx"
    onnx.save_model(build_demo_model(), str(path))
    return path


def _images(folder: Path, count: int = 3, size: tuple[int, int] = (48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


def _dataset(root: Path, labels: dict[int, str] | None = None, **yaml_extra: object) -> Path:
    _images(root / "images" / "train")
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        text = (labels or {}).get(i, "0 0.5 0.5 0.2 0.2\n")
        (root / "labels" / "train" / f"{i}.txt").write_text(text)
    cfg = {"path": ".", "train": "images/train", "val": "images/train", "names": NAMES} | yaml_extra
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "data.yaml"


# --- defect 2: the user's input is never overwritten --------------------------------------------


def test_optimize_report_onto_the_input_or_the_output(demo: Path, tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    line = _error_line(run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--recipe", "simplify", "--report", demo))
    assert "overwrite an input" in line
    same = tmp_path / "x.onnx"
    line = _error_line(run_cli("optimize", demo, "-o", same, "--recipe", "simplify", "--report", same))
    assert "both the output model and the report" in line
    assert _snapshot(tmp_path) == before  # nothing written, nothing left


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_optimize_onto_a_link_to_the_input(demo: Path, tmp_path: Path, link: str) -> None:
    alias = tmp_path / "alias.onnx"
    (os.symlink if link == "symlink" else os.link)(demo, alias)
    before = sha256(demo)
    _error_line(run_cli("optimize", demo, "-o", alias, "--recipe", "simplify"))
    assert sha256(demo) == before


def test_check_update_onto_the_model(demo: Path) -> None:
    before = sha256(demo)
    assert "overwrite an input" in _error_line(run_cli("check", demo, "--golden", demo, "--update"))
    assert sha256(demo) == before


def test_export_onto_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from frontends.zoo import yolov5_tiny
    from tests.fake_repo import save_as_repo_checkpoint

    ckpt = save_as_repo_checkpoint(yolov5_tiny(), tmp_path / "repo", tmp_path / "v5.pt")
    before = sha256(ckpt)
    assert "overwrite an input" in _error_line(run_cli("export", ckpt, "-o", ckpt, "--imgsz", "128"))
    assert sha256(ckpt) == before


def test_detect_save_into_the_source_folder(demo: Path, tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs")
    before = _snapshot(folder)
    line = _error_line(run_cli("detect", demo, folder, "--save", folder))
    assert "overwrite the source image" in line
    assert _snapshot(folder) == before


def test_detect_save_video_next_to_itself(demo: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    before = _snapshot(tmp_path)
    assert "overwrite an input" in _error_line(run_cli("detect", demo, clip, "--save", tmp_path))
    assert _snapshot(tmp_path) == before


def test_detect_saves_atomically_elsewhere(demo: Path, tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "0.jpg"), np.zeros((40, 40, 3), np.uint8))  # same name, other folder
    result = run_cli("detect", demo, folder, "--save", tmp_path / "out", "--conf", "0.9")
    assert result.code == 0, result.err
    saved = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert saved == ["0.jpg", "1.jpg", "2.jpg", "sub/0.jpg"]  # no collision, no temp files


def test_detect_save_pointing_at_a_file(demo: Path, tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs")
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert "not a folder" in _error_line(run_cli("detect", demo, folder, "--save", target))
    assert target.read_text() == "mine"


# --- defect 5: user mistakes exit 2, not 3 -------------------------------------------------------


def test_external_data_outside_the_model_folder_or_missing(demo: Path, tmp_path: Path) -> None:
    model = onnx.load(str(demo))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    inner = tmp_path / "models"
    inner.mkdir()
    onnx.save_model(model, str(inner / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    m = onnx.load(str(inner / "m.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save_model(m, str(inner / "escape.onnx"))
    assert "outside the model's folder" in _error_line(run_cli("inspect", inner / "escape.onnx"))
    (inner / "m.data").unlink()
    assert "external data" in _error_line(run_cli("inspect", inner / "m.onnx"))


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        ({"names": {"x": "a", "y": "b"}}, "'names' keys must be class ids"),
        ({"nc": "abc"}, "'nc' must be an integer"),
        ({"val": 5}, "'val' must be a path"),
        ({"path": ["a", 3]}, "'path' must be a path"),
        ({"names": {0: "a", 2: "c"}}, "without gaps"),
    ],
)
def test_bad_data_yaml(demo: Path, tmp_path: Path, edit: dict, expect: str) -> None:
    data = _dataset(tmp_path / "ds", **edit)
    before = _snapshot(tmp_path)
    assert expect in _error_line(run_cli("eval", demo, "--data", data))
    assert _snapshot(tmp_path) == before


def test_binary_data_yaml(demo: Path, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    data.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert "binary content" in _error_line(run_cli("eval", demo, "--data", data))
    assert "binary content" in _error_line(
        run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--recipe", "simplify", "--data", data)
    )


def test_label_file_not_utf8_or_a_folder_is_skipped_and_reported(demo: Path, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    labels = tmp_path / "ds" / "labels" / "train"
    (labels / "0.txt").write_bytes(b"0 0.5 \xff\xfe 0.2 0.2\n")
    (labels / "1.txt").unlink()
    (labels / "1.txt").mkdir()
    result = run_cli("eval", demo, "--data", data, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["images"] == 1 and out["skipped_images"] == 2
    problem = " ".join(out["problems"])
    assert "label file cannot be read" in problem and "not UTF-8" in problem and "directory" in problem


def test_polygon_labels_become_boxes(tmp_path: Path) -> None:
    from graphopt.data.datasets import load_dataset

    polygon = "1 0.2 0.2 0.6 0.2 0.6 0.5 0.2 0.5\n"
    data = _dataset(tmp_path / "ds", labels={0: polygon, 1: "0 0.5 0.5 0.2 0.2 0.9\n"})
    ds = load_dataset(data)
    np.testing.assert_allclose(ds.items[0].labels, [[1, 0.4, 0.35, 0.4, 0.3]], atol=1e-6)
    assert len(ds.items[1].labels) == 0 and ds.skipped_labels == 1  # 6 fields: neither a box nor a polygon
    assert any("polygon" in p for p in ds.problems)


def _with_metadata(demo: Path, tmp_path: Path, key: str, value: str) -> Path:
    model = onnx.load(str(demo))
    model.metadata_props.add(key=key, value=value)
    path = tmp_path / f"meta-{abs(hash((key, value[:50])))}.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("graphopt.names", "[" * 100_000),
        ("graphopt.names", '{"x": "a"}'),
        ("graphopt.imgsz", '"big"'),
        ("graphopt.head", "mystery"),
        ("graphopt.strides", "8"),
        ("graphopt.preprocess", '{"scale": "x"}'),
        ("graphopt.history", '{"not": "a list"}'),
    ],
)
def test_malformed_metadata(demo: Path, tmp_path: Path, key: str, value: str) -> None:
    model = _with_metadata(demo, tmp_path, key, value)
    images = _images(tmp_path / "imgs", 1)
    assert f"'{key}' is malformed" in _error_line(run_cli("detect", model, images))
    assert f"'{key}' is malformed" in _error_line(run_cli("bench", model, "--runs", "1"))
    if key == "graphopt.history":
        line = _error_line(run_cli("optimize", model, "-o", tmp_path / "o.onnx", "--recipe", "simplify"))
        assert f"'{key}' is malformed" in line


def test_unwritable_output_locations(demo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = _error_line(run_cli("optimize", demo, "-o", blocker / "o.onnx", "--recipe", "simplify"))
    assert "cannot write" in line
    assert "cannot write" in _error_line(run_cli("check", demo, "--golden", "/proc/graphopt.json", "--update"))
    images = _images(tmp_path / "imgs", 1)
    assert "cannot create" in _error_line(run_cli("detect", demo, images, "--save", blocker / "out"))


@pytest.mark.parametrize(
    "args",
    [
        ["--iou", "-1"],
        ["--iou", "2"],
        ["--conf", "2"],
        ["--conf", "nan"],
        ["--conf", "inf"],
        ["--max-frames", "0"],
        ["--max-frames", "-1"],
        ["--threads", "0"],
    ],
)
def test_detect_option_ranges(demo: Path, tmp_path: Path, args: list[str]) -> None:
    images = _images(tmp_path / "imgs", 1)
    _error_line(run_cli("detect", demo, images, *args))


@pytest.mark.parametrize("args", [["--atol", "nan"], ["--atol", "-1"], ["--rtol", "inf"], ["--verify-samples", "0"]])
def test_optimize_option_ranges(demo: Path, tmp_path: Path, args: list[str]) -> None:
    _error_line(run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--recipe", "simplify", *args))
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(
    "golden",
    [
        {"ops": 5},
        {"ops": {"Conv": "many"}},
        {"ops": {"Conv": 1}, "params": -3},
        {"ops": {"Conv": 1}, "outputs": "output0"},
        [1, 2],
    ],
)
def test_malformed_golden(demo: Path, tmp_path: Path, golden: object) -> None:
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(golden))
    assert "golden" in _error_line(run_cli("check", demo, "--golden", path))


# --- defect 6: convert leaves nothing unverified behind ---------------------------------------------


def test_convert_failing_verification_leaves_nothing(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_pnnx()
    import graphopt.compile.ncnn as convert

    monkeypatch.setattr(convert, "NCNN_FP32_TOLERANCE", -1.0)  # every conversion now fails its check
    out = tmp_path / "ncnn"
    result = run_cli("convert", demo, "--to", "ncnn", "-o", out, "--fp32")
    _error_line(result, code=1)
    assert "nothing was written" in result.err
    assert list(out.iterdir()) == []


# --- defect 7 --------------------------------------------------------------------------------------


def test_old_opset_is_refused_clearly(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 7)],
    )
    model.ir_version = 3
    path = tmp_path / "op7.onnx"
    onnx.save_model(model, str(path))
    assert run_cli("inspect", path).code == 0  # reading it is fine
    line = _error_line(run_cli("optimize", path, "-o", tmp_path / "o.onnx", "--recipe", "lossless"))
    assert "opset 7 is older" in line and "convert_version" in line


def test_sigterm_during_a_write_leaves_nothing(tmp_path: Path) -> None:
    """The CLI turns SIGTERM into an exception, so the atomic write removes its temp file."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from graphopt.cli import install_signal_handlers
        from runtime.files import atomic_write
        install_signal_handlers()
        def slow(tmp):
            tmp.write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(30)
        atomic_write({str(tmp_path / "out.onnx")!r}, slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_sigterm_through_the_cli(demo: Path, tmp_path: Path) -> None:
    """A real command stopped by SIGTERM: exit 143, one line, no output and no temp file."""
    images = _images(tmp_path / "imgs", 40, size=(480, 640))
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "graphopt", "detect", str(demo), str(images), "--save", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.time() + 60
    while not (tmp_path / "out").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the command finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("error: terminated")
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no hidden temp file


def test_inspect_refuses_devices_and_fifos(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    assert "not a regular file" in _error_line(run_cli("inspect", "/dev/zero"))
    assert "not a regular file" in _error_line(run_cli("inspect", fifo))  # would block forever if opened
    data = _dataset(tmp_path / "ds")
    assert "not a regular file" in _error_line(run_cli("eval", fifo, "--data", data))
    os.mkfifo(tmp_path / "data.yaml")
    assert "not a regular file" in _error_line(run_cli("eval", fifo, "--data", tmp_path / "data.yaml"))


def test_fifo_image_does_not_block(demo: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "frame.jpg"
    os.mkfifo(fifo)
    assert "not a regular file" in _error_line(run_cli("detect", demo, fifo))


# --- defect 8 --------------------------------------------------------------------------------------


def test_detector_on_an_unreadable_image_says_so(demo: Path) -> None:
    from runtime.detector import Detector

    det = Detector(demo)
    with pytest.raises(ValueError, match="no image .None.: the file could not be read"):
        det(None)
    grey = det(np.zeros((40, 50), np.uint8))  # grey frames are converted, not rejected
    assert grey.boxes.shape[1] == 4


def test_calibration_refuses_what_memory_cannot_hold(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graphopt.quantize.ort as q

    monkeypatch.setattr(q, "available_memory", lambda: 1 << 10)
    images = _images(tmp_path / "imgs", 8, size=(64, 64))
    result = run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--passes", "quantize", "--data", images)
    assert "calibration needs about" in _error_line(result) and "available" in result.err


def test_eval_of_a_fused_nms_model_says_what_caps_it(demo: Path, tmp_path: Path) -> None:
    fused = tmp_path / "fused.onnx"
    # --no-verify: the random demo head makes boxes with negative widths, which host and ONNX NMS treat
    # differently; real heads never do (the real-model test checks fuse-nms against host NMS)
    assert run_cli("optimize", demo, "-o", fused, "--passes", "fuse-nms", "--no-verify").code == 0
    data = _dataset(tmp_path / "ds")
    result = run_cli("eval", fused, "--data", data, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["nms_in_graph"] is True and out["conf"] == 0.25 and out["max_det"] == 100  # the graph's
    assert any("NMS is inside this model's graph" in p for p in out["problems"])
    table = run_cli("eval", fused, "--data", data)
    assert "warning: NMS is inside this model's graph" in table.out
