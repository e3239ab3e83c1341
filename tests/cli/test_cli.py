"""The CLI contract: commands, --json keys, exit codes, one-line errors, untouched inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest

from tests.helpers import REPO, run_cli, sha256


def test_inspect_json_matches_independent_count(demo_model: Path) -> None:
    result = run_cli("inspect", demo_model, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert set(data) == {
        "ops",
        "nodes",
        "params",
        "inputs",
        "outputs",
        "opset",
        "metadata",
        "macs",
        "macs_by_op",
    }
    model = onnx.load(str(demo_model))
    assert data["ops"] == dict(Counter(n.op_type for n in model.graph.node))
    assert data["nodes"] == len(model.graph.node)
    assert data["opset"] == 17
    assert data["inputs"][0] == {"name": "images", "shape": [1, 3, 64, 64], "dtype": "float32"}
    assert data["metadata"]["graphopt.head"] == "anchor-free"


def test_inspect_table(demo_model: Path) -> None:
    result = run_cli("inspect", demo_model)
    assert result.code == 0
    assert "BatchNormalization" in result.out and "[1, 3, 64, 64]" in result.out


def test_optimize_then_diff(demo_model: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "demo.opt.onnx", tmp_path / "report.json"
    before = sha256(demo_model)
    result = run_cli("optimize", demo_model, "-o", out, "--recipe", "simplify", "--report", report)
    assert result.code == 0, result.err
    assert "simplify" in result.out and "wrote" in result.out
    assert sha256(demo_model) == before
    rep = json.loads(report.read_text())
    assert rep["passes"][0]["pass"] == "simplify" and rep["passes"][0]["verification"]["ok"]
    assert rep["after"]["nodes"] < rep["before"]["nodes"]

    diff = json.loads(run_cli("diff", demo_model, out, "--json").out)
    assert set(diff) == {"ops", "nodes", "params", "size_bytes", "macs", "macs_by_op"}
    assert diff["ops"]["Identity"] == {"a": 1, "b": 0, "delta": -1}
    assert diff["nodes"]["delta"] == rep["after"]["nodes"] - rep["before"]["nodes"]
    table = run_cli("diff", demo_model, out)
    assert table.code == 0 and "Identity" in table.out and "file size" in table.out


def test_optimize_json(demo_model: Path, tmp_path: Path) -> None:
    result = run_cli("optimize", demo_model, "-o", tmp_path / "o.onnx", "--passes", "simplify", "--json")
    data = json.loads(result.out)
    assert data["passes"][0]["changed"] is True and "diff" in data


def test_passes_lists_simplify_as_lossless() -> None:
    data = json.loads(run_cli("passes", "--json").out)
    simplify = next(p for p in data if p["name"] == "simplify")
    assert simplify["lossless"] is True and simplify["description"]
    assert "simplify" in run_cli("passes").out


def test_check_golden(demo_model: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    assert run_cli("check", demo_model, "--golden", golden, "--update").code == 0
    same = run_cli("check", demo_model, "--golden", golden)
    assert same.code == 0 and same.out.startswith("ok")

    data = json.loads(golden.read_text())
    data["ops"]["Conv"] -= 1  # the golden file says fewer Conv than the model has
    golden.write_text(json.dumps(data))
    regressed = run_cli("check", demo_model, "--golden", golden)
    assert regressed.code == 1
    assert "Conv" in regressed.out and "increase" in regressed.out
    as_json = json.loads(run_cli("check", demo_model, "--golden", golden, "--json").out)
    assert as_json["ok"] is False
    assert as_json["differences"] == [
        {"what": "op Conv", "golden": 3, "model": 4, "kind": "increase", "allowed": False}
    ]


def test_check_allow_decrease(demo_model: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    run_cli("check", demo_model, "--golden", golden, "--update")
    data = json.loads(golden.read_text())
    data["ops"]["Conv"] += 1  # the model now has fewer Conv than the snapshot
    golden.write_text(json.dumps(data))
    assert run_cli("check", demo_model, "--golden", golden).code == 1
    assert run_cli("check", demo_model, "--golden", golden, "--allow-decrease").code == 0


def test_check_output_shape_change_is_a_regression(demo_model: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    run_cli("check", demo_model, "--golden", golden, "--update")
    data = json.loads(golden.read_text())
    data["outputs"][0]["shape"] = [1, 7, 300]
    golden.write_text(json.dumps(data))
    result = run_cli("check", demo_model, "--golden", golden, "--allow-decrease")
    assert result.code == 1 and "outputs" in result.out


# --- bad inputs: exit 2, one line `error: …`, input untouched -------------------------------------


def _bad_file(tmp_path: Path, kind: str, demo_model: Path) -> Path:
    path = tmp_path / f"{kind}.onnx"
    if kind == "not_onnx":
        path.write_bytes(b"this is a text file, not a model\n" * 20)
    elif kind == "truncated":
        path.write_bytes(demo_model.read_bytes()[: len(demo_model.read_bytes()) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["not_onnx", "truncated", "empty"])
@pytest.mark.parametrize("command", ["inspect", "optimize", "check"])
def test_unusable_model_file(tmp_path: Path, demo_model: Path, kind: str, command: str) -> None:
    path = _bad_file(tmp_path, kind, demo_model)
    before = sha256(path)
    args = {
        "inspect": ["inspect", path],
        "optimize": ["optimize", path, "-o", tmp_path / "o.onnx", "--passes", "simplify"],
        "check": ["check", path, "--golden", tmp_path / "g.json", "--update"],
    }[command]
    result = run_cli(*args)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    assert sha256(path) == before
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "g.json").exists()


def _assert_user_error(result: object, fragment: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--passes", "simplify,no-such-pass"], "unknown pass 'no-such-pass'"),
        (["--recipe", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["--recipe", "missing.yaml"], "recipe file not found"),
        (["--passes", "simplify", "--set", "simplify"], "bad --set"),
        (["--passes", "simplify", "--set", "simplify.nope=1"], "has no option 'nope'"),
        (["--passes", "simplify", "--set", "simplify.fuse_bn=perhaps"], "expects true or false"),
        (["--passes", "simplify", "--set", "shrink.x=1"], "unknown pass 'shrink'"),
        (["--passes", "simplify", "--set", "fold-bn.keep=1"], "not in this pipeline"),
        ([], "exactly one of --passes or --recipe"),
        (["--passes", "simplify", "--recipe", "simplify"], "exactly one of --passes or --recipe"),
        (["--passes", "simplify", "--data", "no/such/folder"], "no such file or folder"),
    ],
)
def test_optimize_user_errors(demo_model: Path, tmp_path: Path, extra: list[str], fragment: str) -> None:
    before = sha256(demo_model)
    out = tmp_path / "o.onnx"
    _assert_user_error(run_cli("optimize", demo_model, "-o", out, *extra), fragment)
    assert sha256(demo_model) == before
    assert not out.exists()


def test_missing_file(tmp_path: Path) -> None:
    _assert_user_error(run_cli("inspect", tmp_path / "nope.onnx"), "no such file")
    _assert_user_error(run_cli("diff", tmp_path / "nope.onnx", tmp_path / "nope2.onnx"), "no such file")


def test_output_equal_to_input(demo_model: Path) -> None:
    before = sha256(demo_model)
    _assert_user_error(
        run_cli("optimize", demo_model, "-o", demo_model, "--passes", "simplify"), "is the input file"
    )
    # the same file through another spelling of the path
    other = demo_model.parent / "." / demo_model.name
    _assert_user_error(
        run_cli("optimize", demo_model, "-o", other, "--passes", "simplify"), "is the input file"
    )
    assert sha256(demo_model) == before


def test_click_usage_errors_are_one_line() -> None:
    _assert_user_error(run_cli("inspect"), "Missing argument")
    _assert_user_error(run_cli("frobnicate"), "No such command")


def test_missing_golden_without_update(demo_model: Path, tmp_path: Path) -> None:
    _assert_user_error(run_cli("check", demo_model, "--golden", tmp_path / "none.json"), "--update")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    plain = subprocess.run(
        [sys.executable, "-m", "graphopt", "inspect", str(missing)], capture_output=True, text=True, cwd=REPO
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "graphopt", "inspect", str(missing), "--debug"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and debug.stderr.strip().splitlines()[-1].startswith("error: ")


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "graphopt"  # the venv's console script, activated or not
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "graphopt" in result.stdout
