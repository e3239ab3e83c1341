"""The Pi 5 cost model (graphopt.compile.pi5_cost): its committed data, the acceptance rule, labels,
and the keys bench and compile add. Fast: no qemu, no ../shared (the fit's inputs are committed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from graphopt.compile import pi5_cost
from tests.helpers import run_cli

COUNTS = Path(__file__).resolve().parents[2] / "benchmarks/pi5_cost/counts.json"


@pytest.fixture
def data() -> dict:
    return copy.deepcopy(pi5_cost.load())


def test_committed_model_loads_and_its_acceptance_follows_its_own_errors(data: dict) -> None:
    assert {"ncnn-fp16", "ncnn-int8", "ort-fp32", "ort-int8"} <= set(data["classes"])
    for name, c in data["classes"].items():
        for threads, r in c["rates"].items():
            ok = r["median_error"] <= pi5_cost.MAX_MEDIAN_ERROR and r["worst_error"] <= pi5_cost.MAX_WORST_ERROR
            assert r["accepted"] == (ok and r["models"] >= 2), (name, threads)
            assert r["models"] == len(r["table"]) and r["rate_insns_per_ms"] > 0
        assert c["accepted"] == any(r["accepted"] for r in c["rates"].values()), name
    assert data["classes"]["ort-int8"]["accepted"] is False  # nothing published to validate it on


def test_committed_rates_are_refitted_from_their_own_table(data: dict) -> None:
    """Each rate and error is what validate() makes of its rows (counted instructions, published ms)."""
    for c in data["classes"].values():
        for threads, r in c["rates"].items():
            rows = [{"name": t["name"], "insns": t["insns"], "published_ms": t["published_ms"]} for t in r["table"]]
            again = pi5_cost.validate(rows, int(threads))
            assert again["rate_insns_per_ms"] == r["rate_insns_per_ms"]
            assert again["median_error"] == r["median_error"] and again["worst_error"] == r["worst_error"]


def test_committed_tables_hold_the_committed_counts(data: dict) -> None:
    counts = json.loads(COUNTS.read_text())
    for klass in ("ncnn-fp16", "ncnn-int8"):
        for r in data["classes"][klass]["rates"].values():
            for t in r["table"]:
                assert counts["benchncnn"][t["name"]]["insns"] == t["insns"], t["name"]


def test_validate_rejects_a_rate_that_does_not_fit() -> None:
    rows = [{"name": "a", "insns": 100e6, "published_ms": 10.0}, {"name": "b", "insns": 100e6, "published_ms": 30.0}]
    r = pi5_cost.validate(rows, 1)
    assert r["accepted"] is False and r["worst_error"] > 0.35
    good = [{"name": n, "insns": 4e6 * ms, "published_ms": ms} for n, ms in (("a", 10.0), ("b", 20.0), ("c", 5.0))]
    r = pi5_cost.validate(good, 1)
    assert r["accepted"] is True and r["rate_insns_per_ms"] == 4_000_000 and r["worst_error"] == 0


def test_estimate_is_labelled_with_its_validation_error(data: dict) -> None:
    accepted = [(k, t) for k, c in data["classes"].items() for t, r in c["rates"].items() if r["accepted"]]
    assert accepted, "no accepted class in the committed model"
    klass, threads = accepted[0]
    backend, precision = klass.split("-")
    rate = data["classes"][klass]["rates"][threads]
    est = pi5_cost.estimate(rate["rate_insns_per_ms"] * 50, backend, precision, int(threads), data=data)
    assert est is not None and est.ms == pytest.approx(50)
    d = est.as_dict()
    assert d["estimate"] is True and d["method"] == "counted"
    assert "estimate, not measured" in d["label"] and f"{rate['median_error']:.0%}" in d["label"]
    proxied = pi5_cost.estimate(1e9, backend, precision, int(threads), "proxy", {"median": 0.1, "worst": 0.2}, data)
    assert proxied is not None and "proxied from MACs" in proxied.label and proxied.error["proxy_worst"] == 0.2


def test_a_class_outside_the_accepted_ones_gets_no_estimate(data: dict) -> None:
    assert pi5_cost.estimate(1e9, "ort", "int8", 4, data=data) is None
    out = pi5_cost.estimate_from_macs(10**9, "ort", "int8", 4, data=data)
    assert out["ms"] is None and out["estimate"] is True and "ort-int8" in out["why"]
    # an accepted class whose validation is flipped to failed gets none either
    klass, c = next((k, c) for k, c in data["classes"].items() if c["accepted"])
    threads = next(t for t, r in c["rates"].items() if r["accepted"])
    c["rates"][threads]["accepted"] = False
    backend, precision = klass.split("-")
    assert pi5_cost.estimate(1e9, backend, precision, int(threads), data=data) is None
    assert "validation failed" in pi5_cost.why_not(backend, precision, int(threads), data)


def test_load_refuses_a_malformed_model(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"classes": {"x": {}}}')
    with pytest.raises(pi5_cost.Pi5CostError, match="lacks"):
        pi5_cost.load.__wrapped__(str(bad))


def test_bench_pi5_estimate_key(zoo_onnx) -> None:  # noqa: ANN001
    r = run_cli("bench", zoo_onnx("yolov5"), "--runs", "1", "--warmup", "0", "--threads", "2", "--pi5-estimate", "--json")
    assert r.code == 0, r.err
    est = json.loads(r.out)["pi5_estimate"]
    assert est["estimate"] is True and (est["threads"] == 4 or "not_at_threads" in est)  # the Pi 5's 4 cores
    data = pi5_cost.load()
    proxied = data["proxy"]["ort-fp32"]["accepted"] and data["classes"]["ort-fp32"]["rates"]["4"]["accepted"]
    assert (est["ms"] is not None) == proxied  # an fp32 ONNX model: the ort-fp32 class, as validated
    if proxied:
        assert est["class"] == "ort-fp32" and est["method"] == "proxy" and "not measured" in est["label"]
    else:
        assert est["why"]


def test_bench_estimate_of_an_ncnn_int8_folder_is_of_the_int8_class(tmp_path: Path) -> None:
    """An NCNN folder graphopt's int8 writer made is judged by the ncnn-int8 class, not fp16's."""
    for name, meta in (("fp16", {"macs": 10**9}), ("int8", {"macs": 10**9, "int8": {"layers": []}})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "m.ncnn.param").write_text("7767517\n0 0\n")
        (folder / "m.ncnn.json").write_text(json.dumps(meta))
        assert pi5_cost.model_estimate(folder)["class"] == f"ncnn-{name}"


def test_pi5_search_ranks_by_the_estimate_where_accepted(zoo_onnx, tmp_path: Path) -> None:  # noqa: ANN001
    from graphopt.compile.compiler import CompileOptions
    from graphopt.compile.results import SearchConfig
    from graphopt.compile.search import _pi5_rank
    from graphopt.compile.targets import TARGETS

    model = str(zoo_onnx("yolov5"))
    configs = [SearchConfig(128, None, False, model), SearchConfig(128, None, True, model, parent="128")]
    configs[0].latency_ms = configs[1].latency_ms = 123.0  # this host's: must not survive as a Pi figure
    opts = CompileOptions(source=Path(model), target=TARGETS["pi5-ort"], out=tmp_path / "o")
    ranked = _pi5_rank(opts, configs)
    fp32, int8 = configs
    assert fp32.pi5_estimate is not None and fp32.pi5_estimate["estimate"] is True
    assert ranked == (fp32.pi5_estimate["ms"] is not None)
    if ranked:
        assert fp32.latency_ms == fp32.pi5_estimate["ms"] != 123.0 and fp32.speedup == 1.0
        assert int8.pi5_estimate["ms"] is None and not int8.rankable and int8.latency_ms is None
        assert "ort-int8" in int8.note
    else:
        assert fp32.latency_ms == 123.0  # left as it was: no accepted estimate to rank by


def test_a_compare_row_is_estimated_from_the_count_of_that_very_file(zoo_onnx, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """benchmarks/compare.py's Pi 5 column: counted instructions where counts.json counted this file
    (by sha256), the MACs proxy as compile shows it for any other file."""
    from benchmarks.pi5_cost import pi5cost, results

    model = Path(zoo_onnx("yolov5"))
    insns = 123_456_789
    counts = {results.GROUP: {"m": {"runtime": "ort", "precision": "fp32", "insns": insns,
                                    "sha256": results.sha256(model)}}}
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    monkeypatch.setattr(pi5cost, "COUNTS", tmp_path / "counts.json")
    est = results.estimate_for(model, "ort")
    rate = pi5_cost.load()["classes"]["ort-fp32"]["rates"]["4"]
    if not rate["accepted"]:
        assert est["ms"] is None and est["why"]
        return
    assert est["method"] == "counted" and est["counted_as"] == "m" and est["threads"] == 4
    assert est["ms"] == round(insns / rate["rate_insns_per_ms"], 2)
    other = tmp_path / "other.onnx"
    import onnx

    proto = onnx.load(model)
    proto.doc_string = "another file"  # the same graph, another file: not the counted one
    onnx.save(proto, other)
    assert results.estimate_for(other, "ort") == pi5_cost.model_estimate(other, threads=4)
    assert results.estimate_for(model, "openvino")["ms"] is None


def test_results_section_divides_each_count_by_its_class_rate(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    """The RESULTS.md Pi 5 section: every variant's row, ms = its instructions / its class's validated
    rate, none for a class without one; a variant without a count is one error, not a half table."""
    from benchmarks.pi5_cost import results

    data = pi5_cost.load()
    rows = {key: {"runtime": rt, "precision": pr, "insns": (k + 1) * 100_000_000, "macs": 10**9}
            for k, (key, _, _, rt, pr, _) in enumerate(results.VARIANTS)}
    text = results.markdown({results.GROUP: rows})
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == len(results.VARIANTS)
    for line, (key, label, _, rt, pr, _) in zip(table, results.VARIANTS, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == label and cells[4] == f"{rows[key]['insns'] / 1e6:.1f}"
        est = pi5_cost.estimate(rows[key]["insns"], rt, pr, results.THREADS[rt], data=data)
        assert cells[6] == (f"**{results._ms(est.ms)}**" if est else "–")
    assert "not measurements" in text
    del rows["ncnn-int8"]
    with pytest.raises(SystemExit) as exc:
        results.markdown({results.GROUP: rows})
    assert exc.value.code == 2
