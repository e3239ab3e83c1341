"""The pass machinery: registry, options, recipes, equivalence guard, history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from graphopt.core.errors import GraphoptError, VerificationError
from graphopt.core.model import load_model, read_metadata
from graphopt.passes.options import Options, option
from graphopt.passes.pipeline import Pipeline, build_steps, parse_overrides
from graphopt.passes.recipes import load_recipe
from graphopt.passes.registry import PassContext, PassResult, register, unregister
from tests.helpers import run_cli, sha256, write_images


@pytest.fixture
def wrong_lossless_pass() -> Iterator[str]:
    """A pass that claims to be lossless but scales the first Conv's weights."""

    @register("test-wrong-lossless", lossless=True, description="deliberately wrong")
    def _wrong(graph: gs.Graph, ctx: PassContext) -> PassResult:
        conv = next(n for n in graph.nodes if n.op == "Conv")
        weight = conv.inputs[1]
        weight.values = (np.asarray(weight.values) * 1.01).astype(np.float32)
        return PassResult(changed=True)

    yield "test-wrong-lossless"
    unregister("test-wrong-lossless")


@dataclass(frozen=True)
class ScaleOptions(Options):
    factor: float = option(1.01, "weight scale")


@pytest.fixture
def lossy_pass() -> Iterator[str]:
    @register("test-lossy", lossless=False, options=ScaleOptions)
    def _lossy(graph: gs.Graph, ctx: PassContext) -> PassResult:
        conv = next(n for n in graph.nodes if n.op == "Conv")
        conv.inputs[1].values = (np.asarray(conv.inputs[1].values) * ctx.options.factor).astype(np.float32)
        return PassResult(changed=True, notes=["scaled"])

    yield "test-lossy"
    unregister("test-lossy")


def test_wrong_lossless_pass_is_refused(demo_model: Path, wrong_lossless_pass: str) -> None:
    with pytest.raises(VerificationError, match="test-wrong-lossless.*max abs err") as exc:
        Pipeline.from_passes(["simplify", wrong_lossless_pass]).run(load_model(demo_model))
    assert "nothing was written" in str(exc.value)


def test_cli_refuses_to_write_after_a_wrong_lossless_pass(
    demo_model: Path, tmp_path: Path, wrong_lossless_pass: str
) -> None:
    out = tmp_path / "out.onnx"
    before = sha256(demo_model)
    result = run_cli("optimize", demo_model, "-o", out, "--passes", f"simplify,{wrong_lossless_pass}")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pass 'test-wrong-lossless'")
    assert "max abs err" in lines[0] and "max rel err" in lines[0]
    assert not out.exists()
    assert sha256(demo_model) == before
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_no_verify_lets_it_through(demo_model: Path, tmp_path: Path, wrong_lossless_pass: str) -> None:
    out = tmp_path / "out.onnx"
    result = run_cli("optimize", demo_model, "-o", out, "--passes", wrong_lossless_pass, "--no-verify")
    assert result.code == 0, result.err
    assert out.exists()


def test_lossy_pass_is_measured_and_rebaselines(demo_model: Path, lossy_pass: str) -> None:
    result = Pipeline.from_passes([lossy_pass, "simplify"]).run(load_model(demo_model))
    lossy, simplify = result.reports
    assert not lossy.verification["ok"] and lossy.verification["max_abs_err"] > 0
    assert 0.9 < lossy.verification["cosine"] < 1.0
    # simplify is held to the lossy pass's output, not to the original: it passes with zero error.
    assert simplify.verification["ok"] and simplify.verification["max_abs_err"] < 1e-5


def test_a_pass_that_changed_nothing_keeps_its_input_and_is_not_run_again(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """changed=False: the input model goes on as it was (an edit the pass did not announce is dropped),
    with no export, shape inference, checker or onnxruntime run for it."""

    @register("test-unchanged", lossless=True, description="says it changed nothing, edits anyway")
    def _unchanged(graph: gs.Graph, ctx: PassContext) -> PassResult:
        conv = next(n for n in graph.nodes if n.op == "Conv")
        conv.inputs[1].values = (np.asarray(conv.inputs[1].values) * 2).astype(np.float32)
        return PassResult(changed=False, notes=["nothing to do"])

    from graphopt.core import ort_session
    from graphopt.passes import pipeline

    runs, finishes = [], []
    real_run, real_finish = ort_session.run, pipeline._finish
    monkeypatch.setattr(ort_session, "run", lambda *a, **k: runs.append(1) or real_run(*a, **k))
    monkeypatch.setattr(pipeline, "_finish", lambda *a, **k: finishes.append(1) or real_finish(*a, **k))
    model = load_model(demo_model)
    try:
        result = Pipeline.from_passes(["test-unchanged"]).run(model)
    finally:
        unregister("test-unchanged")
    assert (len(runs), len(finishes)) == (1, 0)  # the reference outputs only
    report = result.reports[0]
    assert not report.changed and report.ops_delta == {} and report.verification is None
    assert report.notes == ["nothing to do"]
    assert [i.SerializeToString() for i in result.model.graph.initializer] == [
        i.SerializeToString() for i in model.graph.initializer
    ]


def test_simplify_of_a_simplified_model_changes_nothing(demo_model: Path) -> None:
    once = Pipeline.from_passes(["simplify"]).run(load_model(demo_model)).model
    result = Pipeline.from_passes(["simplify"]).run(once)
    assert not result.reports[0].changed and result.reports[0].verification is None
    assert result.model.graph.SerializeToString() == once.graph.SerializeToString()


def test_history_is_recorded_and_appended(demo_model: Path) -> None:
    once = Pipeline.from_passes(["simplify"]).run(load_model(demo_model)).model
    twice = Pipeline.from_passes(["simplify"]).run(once).model
    history = json.loads(read_metadata(twice)["graphopt.history"])
    assert [h["pass"] for h in history] == ["simplify", "simplify"]
    assert history[0]["changed"] is True and history[1]["changed"] is False
    assert read_metadata(twice)["graphopt.names"]  # metadata of the input survives passes


def test_report_has_op_delta_params_and_time(demo_model: Path) -> None:
    report = Pipeline.from_passes(["simplify"]).run(load_model(demo_model)).reports[0]
    d = report.as_dict()
    assert d["nodes_before"] == 27 and d["nodes_after"] < 27
    assert d["ops_delta"]["Identity"] == -1
    assert d["seconds"] > 0
    assert d["verification"]["ok"]


def test_pipeline_output_passes_checker_and_has_shapes(demo_model: Path) -> None:
    model = Pipeline.from_passes(["simplify"]).run(load_model(demo_model)).model
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.value_info) > 0


def test_parse_overrides() -> None:
    assert parse_overrides(["simplify.fuse_bn=true", "q.samples=32", "q.method=entropy"]) == {
        "simplify": {"fuse_bn": True},
        "q": {"samples": 32, "method": "entropy"},
    }
    for bad in ("simplify", "simplify=1", ".x=1", "simplify.=1"):
        with pytest.raises(GraphoptError, match="bad --set"):
            parse_overrides([bad])


def test_option_validation() -> None:
    with pytest.raises(GraphoptError, match="expects true or false"):
        build_steps([("simplify", {})], {"simplify": {"fuse_bn": "maybe"}})
    with pytest.raises(GraphoptError, match="has no option"):
        build_steps([("simplify", {})], {"simplify": {"nope": 1}})
    with pytest.raises(GraphoptError, match="unknown pass 'simplfy'"):
        build_steps([("simplify", {})], {"simplfy": {"fuse_bn": True}})
    steps = build_steps([("simplify", {"fuse_bn": True})])
    assert steps[0].options.as_dict() == {"fuse_bn": True, "use_onnxsim": True}
    for key, value, message in [
        ("target", "any", "must be one of arm, x86"),
        ("calibration", "magic", "must be one of minmax, percentile, entropy"),
        ("percentile", 500, "percentile must be in"),
        ("samples", 0, r"samples must be in \[1, 100,000\]"),
        ("budget", -1, "budget must be"),
        ("budget", float("nan"), "finite number"),
        ("exclude", True, "list of names"),
    ]:
        with pytest.raises(GraphoptError, match=message):
            build_steps([("quantize", {})], {"quantize": {key: value}})
    assert build_steps([("quantize", {})], {"quantize": {"budget": "none"}})[0].options.budget is None
    assert build_steps([("quantize", {})], {"quantize": {"exclude": "a,b"}})[0].options.exclude == ["a", "b"]


def test_invalid_option_in_the_last_pass_fails_before_the_first_runs(demo_model: Path, tmp_path: Path) -> None:
    """Issue 12: every step is validated before anything runs (one line, exit 2, nothing written)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - simplify\n  - fold-bn\n  - fuse-nms: {iou: 7}\n")
    ran: list[str] = []
    import graphopt.passes.simplify as simplify_module

    original = simplify_module.simplify
    try:
        simplify_module.simplify = lambda g, c: ran.append("simplify") or original(g, c)  # noqa: E731
        result = run_cli("optimize", demo_model, "-o", tmp_path / "o.onnx", "--recipe", recipe)
    finally:
        simplify_module.simplify = original
    assert result.code == 2 and result.err.startswith("error: option fuse-nms.iou must be in (0, 1]; got 7")
    assert len(result.err.strip().splitlines()) == 1 and ran == [] and not (tmp_path / "o.onnx").exists()
    result = run_cli("optimize", demo_model, "-o", tmp_path / "o.onnx", "--passes", "simplify,quantize")
    assert result.code == 2 and "pass 'quantize' needs calibration images" in result.err


def test_recipe_target_any_with_quantize(tmp_path: Path) -> None:
    """`target: any` is documented: it leaves quantize its default instead of failing mid-run."""
    from graphopt.data.feeds import FeedSource

    images = write_images(tmp_path / "calib", 2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("target: any\npasses:\n  - quantize\n")
    pipeline = Pipeline.from_recipe(str(recipe), feeds=FeedSource(images))
    assert pipeline.target is None
    recipe.write_text("target: riscv\npasses:\n  - quantize\n")
    with pytest.raises(GraphoptError, match="recipe target must be one of arm, x86 or any"):
        Pipeline.from_recipe(str(recipe), feeds=FeedSource(images))


def test_duplicate_pass_names_are_refused() -> None:
    from graphopt.passes.simplify import SimplifyOptions

    with pytest.raises(GraphoptError, match="a pass named 'simplify' is already registered"):
        register("simplify", lossless=True, options=SimplifyOptions)(lambda g, c: PassResult(changed=False))


def test_set_for_a_pass_not_in_the_pipeline(lossy_pass: str) -> None:
    with pytest.raises(GraphoptError, match="not in this pipeline"):
        build_steps([("simplify", {})], {lossy_pass: {"factor": 2.0}})


def test_recipes(tmp_path: Path) -> None:
    assert load_recipe("simplify").steps == [("simplify", {})]
    custom = tmp_path / "mine.yaml"
    custom.write_text("passes:\n  - simplify: {fuse_bn: true}\n")
    assert load_recipe(str(custom)).steps == [("simplify", {"fuse_bn": True})]
    with pytest.raises(GraphoptError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("passes: []\n")
    with pytest.raises(GraphoptError, match="non-empty 'passes'"):
        load_recipe(str(bad))


def test_real_images_are_used_for_verification(demo_model: Path, coco128: Path) -> None:
    from graphopt.data.feeds import FeedSource

    feeds = FeedSource(coco128 / "data.yaml", samples=2)
    result = Pipeline.from_passes(["simplify"], feeds=feeds).run(load_model(demo_model))
    assert result.feeds == "2 real image(s)"
    batch = feeds.feeds_for(load_model(demo_model))[0]["images"]
    assert batch.shape == (1, 3, 64, 64) and batch.dtype == np.float32
    # letterboxed photo, not noise: padding rows carry the pad value 114/255
    assert (
        np.isclose(batch[0, :, 0, :], 114 / 255).mean() > 0.5
        or np.isclose(batch[0, :, :, 0], 114 / 255).mean() > 0.5
    )
