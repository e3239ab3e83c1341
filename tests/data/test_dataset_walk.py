"""The walk over an image folder or a data.yaml split treats kernel filesystems and entries that vanish
as the user's mistake, never as a crash (issue 24, problem 8)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from runtime.sources import SourceError, images_in
from tests.helpers import one_error_line, run_cli, write_images


def test_a_data_yaml_pointing_at_proc_is_one_line(demo: Path, tmp_path: Path) -> None:
    """`path: /`, `val: /proc`: processes vanish while /proc is listed (was FileNotFoundError, exit 3)."""
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": "/", "train": "proc", "val": "proc", "names": {0: "a"}}))
    line = one_error_line(run_cli("eval", demo, "--data", data))
    assert "val path /proc: on the /proc kernel filesystem, not a folder of images" in line
    line = one_error_line(
        run_cli("optimize", demo, "-o", tmp_path / "o.onnx", "--passes", "simplify", "--data", data)
    )
    assert "/proc kernel filesystem" in line and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("folder", ["/proc", "/sys", "/dev", "/proc/self"])
def test_kernel_filesystems_are_not_image_folders(demo: Path, folder: str) -> None:
    if not Path(folder).exists():
        pytest.skip(f"{folder} is absent here")
    with pytest.raises(SourceError, match="kernel filesystem, not a folder of images"):
        images_in(Path(folder))
    assert "kernel filesystem" in one_error_line(run_cli("detect", demo, folder))


def test_a_walk_passes_over_what_vanishes_and_loops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_images(tmp_path / "imgs", 2)
    (root / "sub").mkdir()
    cv2.imwrite(str(root / "sub" / "c.png"), np.zeros((8, 8, 3), np.uint8))
    os.symlink(root, root / "sub" / "loop")  # a link back up: entered once
    os.symlink(tmp_path / "gone", root / "dangling")  # a link to nothing
    (root / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")  # an image link to nothing
    vanishing = root / "vanishing"
    vanishing.mkdir()
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if Path(str(path)) == vanishing:  # listed, then gone before the walk looks at it
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    found = images_in(root)
    assert [p.relative_to(root).as_posix() for p in found] == ["img00.jpg", "img01.jpg", "sub/c.png"]
