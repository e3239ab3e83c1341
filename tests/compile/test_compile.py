"""`graphopt compile`: stages, artifacts, report, sample and plot; the search grid; errors — on the
checked-in fixtures (no torch). The bundled default model's run is in tests/test_real_compile.py."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import onnx
import pytest

from tests.helpers import need_pnnx, run_cli, sha256, write_dataset


@pytest.fixture
def model(zoo_onnx, tmp_path: Path) -> Path:  # noqa: ANN001
    src = tmp_path / "in" / "yolov5.onnx"
    src.parent.mkdir()
    src.write_bytes(Path(zoo_onnx("yolov5")).read_bytes())
    return src


def test_compile_x86_ort_writes_every_artifact(model: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", 8)
    before = sha256(model)
    out = tmp_path / "out"
    r = run_cli("compile", model, "--target", "x86-ort", "-o", out, "--data", data, "--rounds", "3", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert [s["stage"] for s in report["stages"]] == ["input", "lossless", "int8", "fuse-nms"]
    assert sha256(model) == before  # the input is never written
    for name in ("model.onnx", "report.json", "report.md", "sample.jpg", "latency_vs_map.png"):
        assert (out / name).is_file(), name
    final = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in final.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert json.loads((out / "report.json").read_text())["final"] == str(out / "model.onnx")
    assert cv2.imread(str(out / "sample.jpg")) is not None
    for s in report["stages"]:
        assert s["latency_ms"] > 0 and s["speedup"] > 0 and s["map50_95"] is not None
    lossless = report["stages"][1]
    assert lossless["accuracy_from"] == "input" and lossless["map50_95"] == report["stages"][0]["map50_95"]
    assert "int8" in report["stages"][2]["stage"] and "train split" in report["calibration"]
    assert set(report["frame_ms"]) == {"pre", "infer", "post"}
    assert report["latency"]["spinning"] is False and report["latency_note"] is None
    assert report["pi5_estimate"] is None and all(s["pi5_estimate"] is None for s in report["stages"])
    md = (out / "report.md").read_text()
    assert "| fuse-nms |" in md and "preprocess" in md


def test_compile_pi5_ort_on_x86_shows_no_pi_latency_and_marks_host_figures(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    data = write_dataset(tmp_path / "ds", 8)
    out = tmp_path / "o"
    r = run_cli("compile", model, "--target", "pi5-ort", "-o", out, "--data", data, "--rounds", "2", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert "not measured" in report["latency_note"] and "not the target's" in report["latency_note"]
    assert all(s["latency_ms"] is None and s["speedup"] is None for s in report["stages"])  # no Pi latency
    assert all(s["host_latency_ms"] > 0 for s in report["stages"])  # this host's, under its own key
    by_stage = {s["stage"]: s for s in report["stages"]}
    assert by_stage["int8"]["accuracy_on"] == "host-reference"
    assert "x86 reference arithmetic, not the Pi's kernels" in by_stage["int8"]["accuracy_note"]
    assert by_stage["lossless"]["accuracy_on"] == "host" and "fp32" in by_stage["lossless"]["accuracy_note"]
    assert report["arithmetic"] == {
        "host": "x86",
        "accuracy": "host",
        "latency": "host",
        "pi_command": report["arithmetic"]["pi_command"],
    }
    assert "benchmarks/arm64/run graphopt eval" in report["arithmetic"]["pi_command"]
    assert str(out / "stages" / "2-int8.onnx") in report["arithmetic"]["pi_command"]
    # x86's clock cannot judge int8 on the Pi: the target's rule deploys it, and says why
    (decision,) = report["deploy"]["decisions"]
    assert decision["deployed"] is True and decision["speed"] is None and "does not judge" in decision["reason"]
    md = (out / "report.md").read_text()
    assert "x86 reference arithmetic, not the Pi's kernels" in md and "host ms (not the target's)" in md
    assert "| latency (ms) |" not in md
    # the Pi 5 estimate: labelled, under its own key, none for onnxruntime int8 (nothing validates it)
    assert report["pi5_estimate"]["estimate"] is True and "not measured" in report["pi5_estimate"]["label"]
    assert all(s["pi5_estimate"]["estimate"] is True for s in report["stages"])
    assert by_stage["int8"]["pi5_estimate"]["ms"] is None and "ort-int8" in by_stage["int8"]["pi5_estimate"]["why"]
    fp32 = by_stage["lossless"]["pi5_estimate"]
    assert fp32["ms"] is None or ("estimate, not measured" in fp32["label"] and fp32["method"] == "proxy")
    assert fp32["threads"] == 4 or "not_at_threads" in fp32  # the target's 4, or 1 and why not 4
    assert "an estimate, not a measurement" in md


def test_compile_pi5_ort_bundled_calibration_is_named(model: Path, tmp_path: Path) -> None:
    r = run_cli("compile", model, "--target", "pi5-ort", "-o", tmp_path / "o", "--rounds", "2", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert "bundled" in report["calibration"] and report["accuracy_data"] is None
    assert all(s["map50_95"] is None for s in report["stages"])
    assert report["stages"][2]["notes"][0].startswith("calibrated on graphopt's 32 bundled")


def test_compile_on_an_arm_host_measures_the_pi_targets_for_real(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    monkeypatch.delenv("GRAPHOPT_EMULATED", raising=False)
    data = write_dataset(tmp_path / "ds", 8)
    r = run_cli("compile", model, "--target", "pi5-ort", "-o", tmp_path / "o", "--data", data, "--rounds", "2", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["latency_note"] is None and report["arithmetic"]["latency"] == "target"
    assert all(s["latency_ms"] is not None for s in report["stages"])
    assert {s["accuracy_on"] for s in report["stages"]} == {"target"}
    assert "pi_command" not in report["arithmetic"]
    # under emulation the kernels are the Pi's but the clock is not
    monkeypatch.setenv("GRAPHOPT_EMULATED", "qemu-user -cpu cortex-a76")
    r = run_cli("compile", model, "--target", "pi5-ort", "-o", tmp_path / "e", "--data", data, "--rounds", "2", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["arithmetic"] | {"pi_command": None} == {
        "host": "arm", "accuracy": "target", "latency": "host", "pi_command": None,
    }  # fmt: skip
    assert all(s["latency_ms"] is None for s in report["stages"]) and "emulated" in report["measured_on"]
    assert "emulated" in report["deploy"]["decisions"][0]["reason"]


def _stub_timer(slower: str, factor: float):  # noqa: ANN202
    """A time_models stand-in: every model 10 ms, `slower` `factor` times that (the clock is not consulted)."""

    def time_models(entries, image, threads, rounds):  # noqa: ANN001, ANN202
        return {name: [10.0 * (factor if name == slower else 1.0)] * rounds for name, _, _ in entries}

    return time_models


def _has_qdq(path: Path) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def test_compile_x86_deploys_lossless_where_int8_is_slower(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.delenv("GRAPHOPT_EMULATED", raising=False)
    monkeypatch.setattr("graphopt.compile.compiler.time_models", _stub_timer("int8", 1 / 0.97))
    out = tmp_path / "o"
    r = run_cli("compile", model, "--target", "x86-ort", "-o", out, "--rounds", "3", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    (decision,) = report["deploy"]["decisions"]
    assert decision == {
        "stage": "int8",
        "parent": "lossless",
        "deployed": False,
        "speed": pytest.approx(0.97),
        "loss_points": None,
        "reason": "0.97× of lossless on this host — deployed lossless",
    }
    by_stage = {s["stage"]: s for s in report["stages"]}
    assert by_stage["int8"]["deployed"] is False and by_stage["fuse-nms"]["parent"] == "lossless"
    assert by_stage["int8"]["latency_ms"] > 0  # both speeds of the same run are in the report
    assert by_stage["lossless"]["latency_ms"] > 0
    assert not _has_qdq(out / "model.onnx")
    assert "int8: 0.97× of lossless on this host — deployed lossless" in (out / "report.md").read_text()
    # --keep-lossy forces it
    r = run_cli("compile", model, "--target", "x86-ort", "-o", tmp_path / "k", "--keep-lossy", "--rounds", "3", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["deploy"]["decisions"][0]["deployed"] is True and _has_qdq(tmp_path / "k" / "model.onnx")


def test_compile_x86_deploys_int8_where_it_pays(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.delenv("GRAPHOPT_EMULATED", raising=False)
    monkeypatch.setattr("graphopt.compile.compiler.time_models", _stub_timer("lossless", 1.5))
    out = tmp_path / "o"
    r = run_cli("compile", model, "--target", "x86-ort", "-o", out, "--rounds", "3", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["deploy"]["decisions"][0]["deployed"] is True and report["deploy"]["deployed_from"] == "int8"
    assert _has_qdq(out / "model.onnx")


def test_compile_pi5_ncnn_converts(model: Path, tmp_path: Path) -> None:
    need_pnnx()
    out = tmp_path / "o"
    r = run_cli("compile", model, "--target", "pi5-ncnn", "-o", out, "--rounds", "2", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert [s["stage"] for s in report["stages"]] == ["input", "lossless", "convert"]
    assert report["stages"][-1]["backend"] == "ncnn" and (out / "ncnn" / "1-lossless.ncnn.param").is_file()
    assert any("add --int8" in n for n in report["stages"][-1]["notes"])  # fp16 unless asked
    convert = report["stages"][-1]["pi5_estimate"]
    assert convert["estimate"] is True and convert["class"] == "ncnn-fp16"
    assert convert["threads"] == 4 or "not_at_threads" in convert
    sidecar = json.loads((out / "ncnn" / "1-lossless.ncnn.json").read_text())
    assert sidecar["macs"] == report["stages"][1]["macs"]  # what bench --pi5-estimate reads


def test_compile_prune_and_baseline(model: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", 8)
    r = run_cli(
        "compile", model, "-o", tmp_path / "o", "--data", data, "--prune", "0.9", "--baseline", model,
        "--rounds", "2", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert "prune" in [s["stage"] for s in report["stages"]]
    assert report["latency"]["final_vs_baseline"] > 0 and "map50_95" in report["baseline"]


def test_compile_search_picks_within_budget(model: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", 8)
    out = tmp_path / "o"
    r = run_cli(
        "compile", model, "-o", out, "--data", data, "--search", "--budget", "100", "--rounds", "2", "--json"
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    rows = report["search"]
    assert len(rows) == 6 and {(c["prune"], c["int8"]) for c in rows} == {
        (p, q) for p in (None, 0.85, 0.7) for q in (False, True)
    }
    chosen = [c for c in rows if c["chosen"]]
    ranked = [c for c in rows if c["rankable"]]  # an int8 config under 1.03× of its fp32 parent is not
    for c in rows:
        if c["int8"] and not c["rankable"]:
            assert "int8 does not pay" in c["note"]
    assert len(chosen) == 1 and chosen[0]["rankable"]
    assert chosen[0]["latency_ms"] == min(c["latency_ms"] for c in ranked)  # budget 100: all fit
    assert any(c["pareto"] for c in ranked)
    for c in ranked:  # nothing on the front is beaten on both axes
        if c["pareto"]:
            assert not any(o["latency_ms"] < c["latency_ms"] and o["map50_95"] > c["map50_95"] for o in ranked)
    assert (out / "pareto.png").is_file() and (out / "model.onnx").is_file()
    r = run_cli("compile", model, "-o", tmp_path / "o2", "--search")
    assert r.code == 2 and "--search scores every configuration" in r.err


def test_compile_errors(model: Path, tmp_path: Path) -> None:
    r = run_cli("compile", tmp_path / "missing.pt", "-o", tmp_path / "o")
    assert r.code == 2 and "no such file" in r.err
    r = run_cli("compile", model, "--target", "arm-tflite")
    assert r.code == 2 and "Invalid value for '--target'" in r.err
    r = run_cli("compile", model, "-o", model.parent)
    assert r.code == 2 and "holds an input" in r.err
    r = run_cli("compile", model, "-o", tmp_path / "o", "--prune", "0")
    assert r.code == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = run_cli("compile", bad, "-o", tmp_path / "o3")
    assert r.code == 2 and "not a valid ONNX model" in r.err and not (tmp_path / "o3").exists()


def test_eval_plots_per_class_table_and_pr_curve(model: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", 6)
    plots = tmp_path / "plots"
    r = run_cli("eval", model, "--data", data, "--plots", plots, "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert {row["class"] for row in result["per_class"]} == {"a", "b", "c"}
    assert all(
        row["instances"] == 2 and 0 <= row["ap50_95"] <= row["ap50"] <= 1 for row in result["per_class"]
    )
    assert set(result["timing_ms"]) == {"pre", "infer", "post"} and result["timing_ms"]["infer"] > 0
    assert cv2.imread(str(plots / "pr_curve.png")) is not None
    assert "| class | id | instances | AP50 | AP50-95 |" in (plots / "per_class.md").read_text()
    r = run_cli("eval", model, "--data", data, "--plots", model)
    assert r.code == 2 and "takes a folder" in r.err


def test_a_failing_stage_stops_and_leaves_the_earlier_artifacts(model: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", 4)  # too few images to calibrate int8 (quantize wants ≥ 8)
    out = tmp_path / "o"
    r = run_cli("compile", model, "-o", out, "--data", data)
    assert r.code == 2 and "compile stage 'int8' failed: quantize: only 4 calibration image(s)" in r.err
    lines = r.err.strip().splitlines()  # progress lines, then the one error line
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert (out / "stages" / "1-lossless.onnx").is_file() and not (out / "model.onnx").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["failed"]["stage"] == "int8" and [s["stage"] for s in report["stages"]] == ["input", "lossless"]


@pytest.mark.slow
def test_compile_pi5_ncnn_int8_deploys_graphopts_int8_model(model: Path, tmp_path: Path) -> None:
    need_pnnx()
    out = tmp_path / "o"
    r = run_cli("compile", model, "--target", "pi5-ncnn", "--int8", "all", "-o", out, "--rounds", "1", "--json")
    assert r.code == 0, r.err
    final = json.loads(r.out)["stages"][-1]
    assert final["stage"] == "convert" and final["precision"] == "int8" and final["lossy"]
    sidecar = json.loads((out / "ncnn" / "1-lossless.ncnn.json").read_text())
    layers = sidecar["int8"]["layers"]
    assert sidecar["int8"]["mode"] == "all" and any(d["int8"] for d in layers)
    assert all(not d["int8"] for d in layers if "head output conv" in d["reason"])  # the head stays float
    param = (out / "ncnn" / "1-lossless.ncnn.param").read_text()
    assert param.count(" 8=") == sum(d["int8"] for d in layers)
    assert "graphopt's writer" in final["notes"][0]
