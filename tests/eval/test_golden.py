"""Golden op-count snapshots per fixture × recipe, checked with `graphopt check` as a user's CI would.

The tests only read the snapshots; regenerate them after an intended change with
`python tools/update_golden.py [--real]` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli

GOLDEN = REPO / "tests" / "golden"
RECIPES = ["simplify", "lossless"]


def _check(model: Path, golden: Path, recipe: str, tmp_path: Path) -> None:
    out = tmp_path / f"{golden.stem}.onnx"
    result = run_cli("optimize", model, "-o", out, "--recipe", recipe, "--json")
    assert result.code == 0, result.err
    checked = run_cli("check", out, "--golden", golden)
    assert checked.code == 0, checked.out + checked.err


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("fixture", ["yolov5", "yolov8", "gelan", "yolov9-dual"])
def test_zoo_golden(zoo_onnx, fixture: str, recipe: str, tmp_path: Path) -> None:  # noqa: ANN001
    _check(zoo_onnx(fixture), GOLDEN / f"zoo-{fixture}.{recipe}.json", recipe, tmp_path)


@pytest.mark.real
@pytest.mark.parametrize("recipe", RECIPES)
def test_yolov9t_golden(yolov9t_onnx: Path, recipe: str, tmp_path: Path) -> None:
    _check(yolov9t_onnx, GOLDEN / f"yolov9t-ball.{recipe}.json", recipe, tmp_path)


@pytest.mark.real
@pytest.mark.parametrize("recipe", RECIPES)
def test_yolov5n_golden(yolov5n_onnx: Path, recipe: str, tmp_path: Path) -> None:
    _check(yolov5n_onnx, GOLDEN / f"yolov5n-coco.{recipe}.json", recipe, tmp_path)


def test_golden_detects_a_regression(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    """The lossless golden of the gelan fixture rejects the unoptimized export (more Conv, BN back)."""
    result = run_cli("check", zoo_onnx("gelan"), "--golden", GOLDEN / "zoo-gelan.lossless.json")
    assert result.code == 1 and "BatchNormalization" in result.out


def test_the_update_tool_rewrites_the_zoo_snapshots_as_they_are(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """`tools/update_golden.py` (zoo fixtures) writes byte for byte the snapshots checked in: the tool
    finds the fixtures, and the snapshots are what it makes today."""
    from tools import update_golden

    monkeypatch.setattr(update_golden, "GOLDEN", tmp_path)
    update_golden.main([])
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == sorted(p.name for p in GOLDEN.glob("zoo-*.json"))
    for name in written:
        assert (tmp_path / name).read_text() == (GOLDEN / name).read_text(), name
