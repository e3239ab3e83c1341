"""Human-readable tables for the CLI (the --json forms carry the same numbers)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graphopt.compile.results import CompileReport, SearchReport

if TYPE_CHECKING:
    from graphopt.eval.evaluate import EvalResult
    from graphopt.eval.golden import GoldenCheck
    from graphopt.passes.pipeline import OptimizeReport
    from graphopt.passes.registry import PassSpec


def console() -> Console:
    # Resolved per call so output follows sys.stdout redirection (tests, pipes); wide enough for op tables.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120, highlight=False)


def _delta(value: int | float) -> str:
    if not value:
        return ""
    return f"{value:+,}" if isinstance(value, int) else f"{value:+.3g}"


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return str(n)


def _shape(shape: list[Any] | None) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def print_inspect(path: str, summary: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"[bold]{path}[/]  opset {summary['opset']}  nodes {summary['nodes']:,}  params {summary['params']:,}"
        f"  MACs {summary.get('macs', 0) / 1e9:.3f} G"
        + (
            " (" + ", ".join(f"{op} {m / 1e9:.3f} G" for op, m in summary["macs_by_op"].items()) + ")"
            if len(summary.get("macs_by_op", {})) > 1
            else ""
        )
    )
    io = Table(title="inputs / outputs", title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for entry in summary[kind]:
            io.add_row(kind[:-1], entry["name"], _shape(entry["shape"]), entry["dtype"])
    out.print(io)
    ops = Table(title="ops", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in sorted(summary["ops"].items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(op, str(n))
    out.print(ops)
    if summary["metadata"]:
        meta = Table(title="metadata", title_justify="left")
        meta.add_column("key")
        meta.add_column("value", overflow="fold")
        for k, v in summary["metadata"].items():
            meta.add_row(k, v if len(v) <= 300 else v[:300] + "…")
        out.print(meta)


def print_diff(diff: dict[str, Any], a: str, b: str) -> None:
    table = Table(title_justify="left")
    table.add_column("")
    table.add_column(a, justify="right")
    table.add_column(b, justify="right")
    table.add_column("delta", justify="right")
    for op, row in diff["ops"].items():
        table.add_row(op, str(row["a"]), str(row["b"]), _delta(row["delta"]))
    table.add_section()
    for key, label in (("nodes", "nodes"), ("params", "params"), ("macs", "MACs")):
        row = diff[key]
        table.add_row(label, f"{row['a']:,}", f"{row['b']:,}", _delta(row["delta"]))
    for op, row in diff.get("macs_by_op", {}).items():
        if len(diff["macs_by_op"]) > 1:
            table.add_row(f"MACs {op}", f"{row['a']:,}", f"{row['b']:,}", _delta(row["delta"]))
    row = diff["size_bytes"]
    table.add_row("file size", human_bytes(row["a"]), human_bytes(row["b"]), _delta(row["delta"]))
    console().print(table)


def print_pipeline(done: OptimizeReport, a: str, b: str) -> None:
    out = console()
    report, diff = done.report(), done.diff
    table = Table(title="passes", title_justify="left")
    for col, justify in (
        ("pass", "left"),
        ("kind", "left"),
        ("changed", "left"),
        ("nodes", "right"),
        ("op delta", "left"),
        ("params", "right"),
        ("ms", "right"),
        ("check", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for p in report["passes"]:
        delta = ", ".join(f"{op} {d:+d}" for op, d in p["ops_delta"].items()) or "-"
        table.add_row(
            p["pass"],
            "lossless" if p["lossless"] else "lossy",
            "yes" if p["changed"] else "no",
            f"{p['nodes_before']} → {p['nodes_after']}",
            delta,
            _delta(p["params_after"] - p["params_before"]) or "0",
            f"{p['seconds'] * 1000:.0f}",
            _check_text(p["verification"]),
        )
    out.print(table)
    for p in report["passes"]:
        for note in p["notes"]:
            out.print(f"  {p['pass']}: {note}")
        if p.get("removed_outputs"):
            out.print(
                f"  [yellow]{p['pass']}: removed graph output(s) {', '.join(p['removed_outputs'])}[/] "
                "(announced by the pass)"
            )
    if report.get("verification_inputs"):
        out.print(f"verified on {report['verification_inputs']}")
    else:
        out.print("[yellow]not verified (--no-verify)[/]")
    print_diff(diff, a, b)


def _check_text(v: dict[str, Any] | None) -> str:
    if not v:
        return "-"
    text = f"max abs {v['max_abs_err']:.2g}"
    if "cosine" in v:
        text += f", cos {v['cosine']:.6f}"
    return text


def print_check(checked: GoldenCheck) -> None:
    out = console()
    result = checked.as_dict()
    if result["ok"]:
        allowed = [d for d in result["differences"] if d["allowed"]]
        out.print(
            f"ok: {result['model']} matches {result['golden']}"
            + (f" ({len(allowed)} allowed decrease(s))" if allowed else "")
        )
        return
    table = Table(title=f"regression against {result['golden']}", title_justify="left")
    for col in ("what", "golden", "model", "change"):
        table.add_column(col)
    for d in result["differences"]:
        table.add_row(
            d["what"], str(d["golden"]), str(d["model"]), d["kind"] + (" (allowed)" if d["allowed"] else "")
        )
    out.print(table)


def print_passes(specs: list[PassSpec]) -> None:
    passes = [s.describe() for s in specs]
    table = Table()
    for col in ("pass", "kind", "description", "options"):
        table.add_column(col)
    for p in passes:
        opts = (
            "\n".join(
                f"{k}={d['default']}"
                + (f" ({'|'.join(map(str, d['choices']))})" if d["choices"] else "")
                + (f" {d['interval']}" if d.get("interval") else "")
                for k, d in p["option_details"].items()
            )
            or "-"
        )
        requires = f"\nneeds: {', '.join(p['requires'])}" if p["requires"] else ""
        table.add_row(p["name"], "lossless" if p["lossless"] else "lossy", p["description"] + requires, opts)
    console().print(table)


def print_export(r: dict[str, Any]) -> None:
    out = console()
    table = Table(title=f"exported {r['output']}", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("family", r["family"])
    table.add_row("input", f"images [1, 3, {r['imgsz'][0]}, {r['imgsz'][1]}] float32")
    for o in r["outputs"]:
        main = "  (main branch)" if r.get("main_output") == o["name"] else ""
        table.add_row("output", f"{o['name']} {_shape(o['shape'])}{main}")
    if r.get("preprocess"):
        table.add_row("preprocess", r["preprocess"])
    table.add_row("opset", str(r["opset"]))
    table.add_row(
        "nodes", f"{sum(r['ops'].values())} (Conv {r['conv']}, BatchNormalization {r['batchnorm']})"
    )
    if r.get("max_abs_diff") is None:
        table.add_row("checked", f"onnxruntime on {r['verified_on']}: finite output of the declared shape")
    else:
        table.add_row("verified", f"max abs diff vs torch {r['max_abs_diff']:.2e} on {r['verified_on']}")
    table.add_row("time", f"{r['seconds']:.1f} s")
    out.print(table)
    for note in r["notes"]:
        out.print(f"  note: {escape(note)}")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _latency_row(table: Table, label: str, lat: dict[str, Any]) -> None:
    table.add_row(
        label,
        _ms(lat["avg_ms"]),
        _ms(lat["min_ms"]),
        _ms(lat["max_ms"]),
        _ms(lat["p50_ms"]),
        _ms(lat["p95_ms"]),
        "-" if lat["fps"] is None else f"{lat['fps']:.1f}",
    )


def _latency_table(rows: list[tuple[str, dict[str, Any]]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("", "avg ms", "min", "max", "p50", "p95", "FPS"):
        table.add_column(col, justify="right" if col else "left")
    for label, lat in rows:
        _latency_row(table, label, lat)
    return table


def _health(r: dict[str, Any]) -> str:
    temp = "n/a" if r.get("cpu_temp_c") is None else f"{r['cpu_temp_c']:.1f} °C"
    thr = r.get("throttled")
    throttle = (
        "n/a (not a Raspberry Pi)" if thr is None else (", ".join(thr["now"]) or "no") + f" ({thr['raw']})"
    )
    return f"CPU temperature {temp}; throttled: {throttle}"


def print_eval(evaluated: EvalResult, per_class: bool = False) -> None:
    out = console()
    r = evaluated.as_dict()
    table = Table(
        title=f"{r['model']} on {r['data']} ({r['backend']}, {r['imgsz'][0]}x{r['imgsz'][1]}"
        + (f", {r['preprocess']})" if r.get("preprocess") else ")"),
        title_justify="left",
    )
    for col in ("images", "instances", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(col, justify="right")
    table.add_row(
        str(r["images"]),
        str(r["instances"]),
        f"{r['precision']:.3f}",
        f"{r['recall']:.3f}",
        f"{r['map50']:.3f}",
        f"{r['map50_95']:.3f}",
    )
    out.print(table)
    t = r.get("timing_ms") or {}
    if t:
        out.print(
            f"per image: preprocess {t['pre']:.1f} ms, inference {t['infer']:.1f} ms, postprocess {t['post']:.1f} ms"
        )
    if per_class and r.get("per_class"):
        classes = Table(title="per class", title_justify="left")
        for col in ("class", "instances", "AP50", "AP50-95"):
            classes.add_column(col, justify="left" if col == "class" else "right")
        for row in sorted(r["per_class"], key=lambda x: -x["ap50_95"]):
            classes.add_row(
                row["class"], str(row["instances"]), f"{row['ap50']:.3f}", f"{row['ap50_95']:.3f}"
            )
        out.print(classes)
    for p in r.get("plots", []):
        out.print(f"wrote {p}")
    for p in r["problems"]:
        out.print(f"[yellow]warning:[/] {p}")


def print_bench(r: dict[str, Any]) -> None:
    out = console()
    rows = [("inference", r)] + ([("whole frame", r["end_to_end"])] if "end_to_end" in r else [])
    out.print(
        _latency_table(
            rows,
            f"{r['model']}: {r['backend']}, {r['threads']} threads, "
            f"{r['imgsz'][0]}x{r['imgsz'][1]}, {r['runs']} runs",
        )
    )
    out.print(_health(r))
    est = r.get("pi5_estimate")
    if est is not None:
        if est.get("ms") is None:
            out.print(f"Raspberry Pi 5: {est.get('why')}")
        else:
            out.print(f"Raspberry Pi 5 (estimated, not measured): ~{est['ms']:.0f} ms at {est['threads']} thread(s) — {est['label']}")


def print_ncnn_int8(r: dict[str, Any]) -> None:
    """`convert --to ncnn --int8`: what was written, how it was checked, and every conv's decision."""
    out = console()
    v = r["verified"]
    errors = (
        f", score error {v['score_error']:.3f}, box error {v['box_error_px']:.2f} px" if "score_error" in v else ""
    )
    out.print(
        f"wrote {escape(r['param'])} and .bin ({human_bytes(r['bin_bytes'])}; fp32 {human_bytes(r['fp32_bin_bytes'])}),"
        f" sidecar {escape(r['sidecar'])}"
    )
    out.print(
        f"int8 {r['mode']}: {r['int8_layers']} of {r['conv_layers']} convs int8 ({r['requantize_fused']} with requantize"
        f" fused), {r['calibration']} calibration on {r['calibration_images']} images; vs the fp32 NCNN model on"
        f" {v['images']} calibration images: cosine {v['cosine']:.5f}{errors}"
    )
    if r.get("calibration_compared"):
        out.print(
            "calibration compared (score error vs fp32 on the calibration images): "
            + ", ".join(
                f"{m} {c.get('score_error', 1 - c['cosine']):.4f}" for m, c in r["calibration_compared"].items()
            )
            + f" — kept {r['calibration']}"
        )
    table = Table(title="layers", title_justify="left")
    for col in ("layer", "type", "activation", "precision", "why"):
        table.add_column(col)
    for d in r["layers"]:
        precision = ("int8 → int8" if d["requantize"] else "int8") if d["int8"] else "fp16"
        table.add_row(escape(d["layer"]), d["type"], d["activation"], precision, escape(d["reason"]))
    out.print(table)


def print_detect(r: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"{r['frames']} frame(s) from {r['source']}: {r['detections']} detection(s)"
        + (f", {r['skipped']} skipped" if r["skipped"] else "")
        + (f", {r['dropped']} stale frame(s) dropped" if r["dropped"] else "")
    )
    if r["per_class"]:
        out.print("  " + ", ".join(f"{n} ×{c}" for n, c in r["per_class"].items()))
    for reason in r["skip_reasons"][:5]:
        out.print(f"  [yellow]skipped:[/] {reason}")
    out.print(
        _latency_table(
            [("inference", r["inference"]), ("whole frame", r["per_frame"])], f"latency ({r['backend']})"
        )
    )
    out.print(_health(r))
    if r["saved_to"]:
        out.print(f"annotated output in {r['saved_to']}")


def print_compile(compiled: CompileReport | SearchReport) -> None:
    out = console()
    r = compiled.as_dict()
    if isinstance(compiled, SearchReport):
        _print_search(out, r)
        return
    on_target = r["arithmetic"].get("latency") == "target"
    table = Table(title=f"{r['source']} → {r['target']} ({r['device']})", title_justify="left")
    ms_col, speed_col = ("ms", "speed") if on_target else ("host ms", "host speed")
    for col in ("stage", "nodes", "params", "MACs (G)", ms_col, speed_col, "mAP50-95", "deployed", "time (s)"):
        table.add_column(col, justify="left" if col in ("stage", "deployed") else "right")
    for s in r["stages"]:
        ms, speed = (s["latency_ms"], s["speedup"]) if on_target else (s["host_latency_ms"], s["host_speedup"])
        m = "–" if s["map50_95"] is None else f"{s['map50_95']:.4f}" + ("*" if s.get("accuracy_on") == "host-reference" else "")
        table.add_row(
            s["stage"],
            "–" if s["nodes"] is None else f"{s['nodes']:,}",
            "–" if s["params"] is None else f"{s['params']:,}",
            "–" if s["macs"] is None else f"{s['macs'] / 1e9:.3f}",
            _ms(ms),
            "–" if speed is None else f"{speed:.2f}×",
            m,
            {True: "yes", False: "no", None: "–"}[s.get("deployed")],
            f"{s['seconds']:.1f}",
        )
    out.print(table)
    if any(s.get("accuracy_on") == "host-reference" for s in r["stages"]):
        out.print("[yellow]* x86 reference arithmetic, not the Pi's kernels[/]")
    for d in (r.get("deploy") or {}).get("decisions", []):
        out.print(f"{d['stage']}: {d['reason']}")
    lat = r.get("latency") or {}
    if "final_vs_baseline" in lat:
        size = "same input size" if lat.get("same_size") else f"input {lat.get('final_imgsz')} vs {lat.get('baseline_imgsz')}"
        out.print(f"final vs baseline ({r['baseline']['model']}): {lat['final_vs_baseline']:.2f}× (same run, {size})")
    if r.get("frame_ms"):
        f = r["frame_ms"]
        where = "" if r.get("frame_ms_on") == "target" else " on this host"
        out.print(
            f"one frame{where}: preprocess {f['pre']:.1f} ms, inference {f['infer']:.1f} ms, postprocess {f['post']:.1f} ms"
        )
    if r.get("latency_note"):
        out.print(f"[yellow]{r['latency_note']}[/]")
    if r["arithmetic"].get("pi_command"):
        out.print(f"measure with the Pi's kernels — {r['arithmetic']['pi_command']}")
    if r.get("sample"):
        out.print(f"sample: {r['sample']} ({', '.join(r.get('sample_detections', [])) or 'no detections'})")
    out.print(f"wrote {r['final']}, report.md, report.json, {Path(r['plot']).name if r.get('plot') else ''}")


def _print_search(out: Console, r: dict[str, Any]) -> None:
    table = Table(
        title=f"search: {r['source']} → {r['target']} (budget {r['budget']} points)", title_justify="left"
    )
    for col in ("imgsz", "prune", "int8", "ms", "speed", "mAP50-95", "loss", "pareto", "chosen"):
        table.add_column(col, justify="right")
    for c in r["search"]:
        table.add_row(
            str(c["imgsz"]),
            "–" if c["prune"] is None else f"{c['prune']}",
            "yes" if c["int8"] else "no",
            _ms(c["latency_ms"]),
            "–" if c["speedup"] is None else f"{c['speedup']:.2f}×",
            f"{c['map50_95']:.4f}",
            f"{c['loss_points']:.2f}",
            "●" if c["pareto"] else "",
            "◀" if c["chosen"] else "",
        )
    out.print(table)
    if r.get("latency_note"):
        out.print(f"[yellow]{r['latency_note']}[/]")
    base = r.get("baseline")
    if base:
        out.print(
            f"vs baseline ({base['model']}, input {base['imgsz']}): chosen {base['chosen_vs_baseline']:.2f}×"
            + (
                f"; at its input size {base['same_size']} {base['same_size_vs_baseline']:.2f}×"
                if base.get("same_size")
                else ""
            )
        )
    out.print(f"chosen: {r['chosen']}; wrote {r['plot']}, report.md, report.json")
