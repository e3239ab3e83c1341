"""Every input and output is checked before any work, the same metadata check runs in every command that
reads metadata, and a failed command leaves nothing behind (issue 24, problems 1, 9 and 11)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnx
import pytest
import yaml

from tests.helpers import need_pnnx, one_error_line, run_cli, write_dataset
from tools.make_demo_model import build_demo_model


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- problem 1: a failed command leaves its output behind ----------------------------------------------


@pytest.mark.parametrize("onto", ["recipe", "data.yaml", "an image of the dataset"])
def test_optimize_checks_every_output_against_every_input_first(
    demo: Path, tmp_path: Path, onto: str
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - simplify\n")
    data = write_dataset(tmp_path / "ds", 2)
    report = {
        "recipe": recipe,
        "data.yaml": data,
        "an image of the dataset": data.parent / "images/train/img00.jpg",
    }
    before = _tree(tmp_path)
    r = run_cli("optimize", demo, "-o", tmp_path / "out" / "opt.onnx", "--recipe", recipe, "--data", data,
                "--report", report[onto])  # fmt: skip
    assert "the report would overwrite an input" in one_error_line(r)
    assert _tree(tmp_path) == before  # no out/opt.onnx, not even out/


def test_a_failing_second_output_takes_the_first_with_it(demo: Path, tmp_path: Path) -> None:
    """The model is written, then the report cannot be: neither remains, nor the folder made for them."""
    before = _tree(tmp_path)
    r = run_cli("optimize", demo, "-o", tmp_path / "out" / "sub" / "opt.onnx", "--passes", "simplify",
                "--report", "/proc/graphopt-report.json")  # fmt: skip
    assert "cannot write the report" in one_error_line(r)
    assert _tree(tmp_path) == before
    ok = run_cli("optimize", demo, "-o", tmp_path / "out" / "opt.onnx", "--passes", "simplify",
                 "--report", tmp_path / "out" / "r.json")  # fmt: skip
    assert ok.code == 0 and _tree(tmp_path / "out") == {"opt.onnx", "r.json"}


def test_commit_together_is_all_or_nothing(tmp_path: Path) -> None:
    from runtime.files import FileProblem, atomic_write, commit_together

    with commit_together():
        atomic_write(tmp_path / "a" / "one.txt", lambda t: t.write_text("1"))
        atomic_write(tmp_path / "two.txt", lambda t: t.write_text("2"))
        assert not (tmp_path / "a" / "one.txt").exists()  # staged until the block ends
    assert (tmp_path / "a" / "one.txt").read_text() == "1" and (tmp_path / "two.txt").read_text() == "2"

    def disk_full(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(FileProblem, match="No space left"), commit_together():
        atomic_write(tmp_path / "b" / "c" / "x.txt", lambda t: t.write_text("x"))
        atomic_write(tmp_path / "two.txt", disk_full)
    assert _tree(tmp_path) == {"a", "a/one.txt", "two.txt"} and (tmp_path / "two.txt").read_text() == "2"


# --- problem 9: convert accepts metadata that eval and detect refuse -------------------------------------


def test_convert_refuses_the_metadata_eval_refuses(tmp_path: Path) -> None:
    need_pnnx()
    model = build_demo_model()
    for prop in model.metadata_props:
        if prop.key == "graphopt.names":
            prop.value = '{"a": "x"}'
    path = tmp_path / "names.onnx"
    onnx.save_model(model, str(path))
    data = write_dataset(tmp_path / "ds", 2)
    expected = "model metadata 'graphopt.names' is malformed"
    assert expected in one_error_line(run_cli("eval", path, "--data", data))
    assert expected in one_error_line(run_cli("convert", path, "--to", "ncnn", "-o", tmp_path / "ncnn"))
    assert not (tmp_path / "ncnn").exists()


# --- problem 11: compile checks every input before the first stage ---------------------------------------


def _compile_case(tmp_path: Path, demo: Path, case: str) -> list[object]:
    if case == "missing image":
        return ["--image", tmp_path / "missing.jpg"]
    if case == "fifo image":
        os.mkfifo(tmp_path / "frame.jpg")
        return ["--image", tmp_path / "frame.jpg"]
    if case == "fifo baseline":
        os.mkfifo(tmp_path / "peer.onnx")
        return ["--baseline", tmp_path / "peer.onnx"]
    if case == "missing baseline":
        return ["--baseline", tmp_path / "peer.onnx"]
    if case == "nc abc":
        data = write_dataset(tmp_path / "ds", 2)
        data.write_text(yaml.safe_dump(yaml.safe_load(data.read_text()) | {"nc": "abc"}))
        return ["--data", data]
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing image", "--image"),
        ("fifo image", "not a regular file"),
        ("fifo baseline", "not a regular file"),
        ("missing baseline", "--baseline"),
        ("nc abc", "'nc' must be an integer"),
    ],
)
def test_compile_checks_every_input_before_the_first_stage(
    demo: Path, tmp_path: Path, case: str, message: str
) -> None:
    args = _compile_case(tmp_path, demo, case)
    start = time.perf_counter()
    r = run_cli("compile", demo, "-o", tmp_path / "compiled", *args)
    assert message in one_error_line(r)
    assert time.perf_counter() - start < 15  # found before any stage (it was stage 5/5, after ~20 s)
    assert not (tmp_path / "compiled").exists()  # no stage ran, no stage model written


def test_compile_refuses_an_opset_from_the_future_before_the_first_stage(demo: Path, tmp_path: Path) -> None:
    model = onnx.load(str(demo))
    model.opset_import[0].version = 99
    future = tmp_path / "op99.onnx"
    onnx.save_model(model, str(future))
    r = run_cli("compile", future, "-o", tmp_path / "compiled")
    assert "opset 99 is newer than the installed onnx knows" in one_error_line(r)
    assert not (tmp_path / "compiled").exists()
    line = one_error_line(run_cli("optimize", future, "-o", tmp_path / "o.onnx", "--recipe", "lossless"))
    assert "opset 99 is newer" in line  # the same check in optimize


def test_compile_options_check_is_what_the_compiler_runs(demo: Path, tmp_path: Path) -> None:
    """The checks live on CompileOptions (the CLI only calls them): a Python caller gets them too."""
    from graphopt.compile.compiler import CompileOptions, Compiler
    from graphopt.compile.targets import TARGETS
    from graphopt.core.errors import GraphoptError

    opts = CompileOptions(
        source=demo, target=TARGETS["x86-ort"], out=tmp_path / "c", image=tmp_path / "no.jpg"
    )
    with pytest.raises(GraphoptError, match="--image .*no such file"):
        Compiler(opts).run()
    assert not (tmp_path / "c").exists()
