"""No command writes onto its input: not onto the model, a link to it, the checkpoint, the images a
`detect --save` reads, or its own output (inputs' sha256 unchanged, no stray files)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.helpers import one_error_line, run_cli, sha256, tree_hashes

NAMES = {0: "a", 1: "b", 2: "c"}


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




def test_optimize_report_onto_the_input_or_the_output(demo: Path, tmp_path: Path) -> None:
    before = tree_hashes(tmp_path)
    line = one_error_line(run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--recipe", "simplify", "--report", demo))
    assert "overwrite an input" in line
    same = tmp_path / "x.onnx"
    line = one_error_line(run_cli("optimize", demo, "-o", same, "--recipe", "simplify", "--report", same))
    assert "both the output model and the report" in line
    assert tree_hashes(tmp_path) == before  # nothing written, nothing left


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_optimize_onto_a_link_to_the_input(demo: Path, tmp_path: Path, link: str) -> None:
    alias = tmp_path / "alias.onnx"
    (os.symlink if link == "symlink" else os.link)(demo, alias)
    before = sha256(demo)
    one_error_line(run_cli("optimize", demo, "-o", alias, "--recipe", "simplify"))
    assert sha256(demo) == before


def test_check_update_onto_the_model(demo: Path) -> None:
    before = sha256(demo)
    assert "overwrite an input" in one_error_line(run_cli("check", demo, "--golden", demo, "--update"))
    assert sha256(demo) == before


def test_export_onto_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from frontends.zoo import yolov5_tiny
    from tests.fake_repo import save_as_repo_checkpoint

    ckpt = save_as_repo_checkpoint(yolov5_tiny(), tmp_path / "repo", tmp_path / "v5.pt")
    before = sha256(ckpt)
    assert "overwrite an input" in one_error_line(run_cli("export", ckpt, "-o", ckpt, "--imgsz", "128"))
    assert sha256(ckpt) == before


def test_detect_save_into_the_source_folder(demo: Path, tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs")
    before = tree_hashes(folder)
    line = one_error_line(run_cli("detect", demo, folder, "--save", folder))
    assert "overwrite the source image" in line
    assert tree_hashes(folder) == before


def test_detect_save_video_next_to_itself(demo: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    before = tree_hashes(tmp_path)
    assert "overwrite an input" in one_error_line(run_cli("detect", demo, clip, "--save", tmp_path))
    assert tree_hashes(tmp_path) == before


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
    assert "not a folder" in one_error_line(run_cli("detect", demo, folder, "--save", target))
    assert target.read_text() == "mine"
