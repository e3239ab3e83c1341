"""`graphopt compile`'s report: report.json, report.md and the latency-vs-mAP plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphopt.compile.results import CompileReport, SearchReport
from graphopt.core.fileio import atomic_write, write_json


def _num(v: float | int | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def search_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# graphopt compile --search: {Path(report['source']).name} → {report['target']}",
        "",
        f"- measured on: {report['measured_on']}; mAP50-95 on the val split of {report['accuracy_data']}",
    ]
    if report.get("latency_note"):
        lines.append(f"- **{report['latency_note']}**")
    lines += [
        f"- calibration: {report['calibration']}",
        f"- reference: {report['reference']} (fp32, unpruned); budget {report['budget']} points",
        f"- **chosen: {report['chosen']}** → `{report['final']}` (with NMS in the graph)",
        "",
        "| config | imgsz | prune | int8 | latency (ms) | speed | mAP50-95 | loss (points) | Pareto | note |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for c in report["search"]:
        speed = "–" if c["speedup"] is None else f"{c['speedup']:.2f}×"
        lines.append(
            f"| {'**' + c['name'] + '**' if c['chosen'] else c['name']} | {c['imgsz']} | {c['prune'] or '–'} | "
            f"{'yes' if c['int8'] else 'no'} | {_num(c['latency_ms'], '.1f')} | {speed} | {c['map50_95']:.4f} | "
            f"{c['loss_points']:.2f} | {'●' if c['pareto'] else ''} | {c.get('note') or ''} |"
        )
    base = report.get("baseline")
    if base:
        lines += [
            "",
            f"Baseline `{base['model']}` (input {base['imgsz']}): {base['latency_ms']:.1f} ms. The chosen "
            f"configuration is **{base['chosen_vs_baseline']:.2f}×** its speed; at the baseline's own input size "
            + (
                f"the fastest configuration within the budget ({base['same_size']}) is "
                f"**{base['same_size_vs_baseline']:.2f}×** — what the graph work bought, apart from a smaller input."
                if base.get("same_size")
                else "no configuration was searched."
            ),
        ]
    lines += ["", f"![Pareto]({Path(report['plot']).name})", "", f"Total time: {report['seconds']} s."]
    return "\n".join(lines) + "\n"


def pi5_lines(summary: dict[str, Any] | None, rows: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """The estimated Pi 5 latency table (graphopt.compile.pi5_cost): each row an estimate with its
    validation error, or why it has none."""
    if not summary:
        return []
    lines = [
        "",
        f"**Estimated Pi 5 latency — an estimate, not a measurement** ({summary['model']}; "
        f"the target runs {summary['threads']} threads; a row at another count says why):",
        "",
        "| stage | Pi 5 estimate (ms) | threads | class | instructions | rate's error (median / worst) | note |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for name, e in rows:
        if not e:
            continue
        if e.get("ms") is None:
            lines.append(f"| {name} | – | {e.get('threads', '–')} | {e.get('class', '–')} | – | – | {e.get('why', '')} |")
            continue
        err = e["error"]
        how = "counted (qemu)" if e["method"] == "counted" else (
            f"MACs proxy (±{err['proxy_median']:.0%} median, {err['proxy_worst']:.0%} worst)")
        lines.append(
            f"| {name} | ~{e['ms']:.0f} | {e['threads']} | {e['class']} | {how} | "
            f"{err['median']:.0%} / {err['worst']:.0%} | estimate"
            + (f"; {e['not_at_threads']}" if e.get("not_at_threads") else "") + " |"
        )
    lines += ["", f"Limits of the estimate: {summary['limits']}."]
    return lines


ARITHMETIC = {
    "target": "the target's kernels",
    "host": "this host's kernels",
    "host-reference": "x86 reference arithmetic, not the Pi's kernels",
}


def markdown(report: CompileReport | SearchReport) -> str:
    if isinstance(report, SearchReport):
        return search_markdown(report.as_dict())
    r = report.as_dict()
    on_target = r["arithmetic"].get("latency") == "target"
    lines = [
        f"# graphopt compile: {Path(r['source']).name} → {r['target']}",
        "",
        f"- device: {r['device']} ({r['backend']})",
        f"- measured on: {r['measured_on']}",
    ]
    if r.get("latency_note"):
        lines.append(f"- **{r['latency_note']}**")
    lines.append(f"- calibration: {r['calibration']}")
    lines.append(
        f"- accuracy: mAP on the val split of {r['accuracy_data']}"
        if r["accuracy_data"]
        else "- accuracy: not measured (give `--data` with a labeled data.yaml)"
    )
    if r["arithmetic"].get("pi_command"):
        lines.append(f"- measure with the Pi's kernels: {r['arithmetic']['pi_command']}")
    if r.get("deploy"):
        lines.append(f"- deployed chain ends at `{r['deploy']['deployed_from']}`")
    if r.get("final"):
        lines.append(f"- deployable model: `{r['final']}`")
    ms_head = "latency (ms)" if on_target else "host ms (not the target's)"
    speed_head = "speed vs first" if on_target else "host speed"
    lines += [
        "",
        f"| stage | ops | params | MACs (G) | {ms_head} | {speed_head} | mAP50-95 | mAP50 | computed on | deployed | time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for s in r["stages"]:
        macs = None if s["macs"] is None else s["macs"] / 1e9
        mark = f" (= {s['accuracy_from']})" if s.get("accuracy_from") and s["map50_95"] is not None else ""
        ms = s["latency_ms"] if on_target else s["host_latency_ms"]
        speed = s["speedup"] if on_target else s["host_speedup"]
        where = ARITHMETIC.get(s.get("accuracy_on") or "", "–") if s["map50_95"] is not None else "–"
        deployed = {True: "yes", False: "no", None: "–"}[s.get("deployed")]
        lines.append(
            f"| {s['stage']} | {_num(s['nodes'], ',')} | {_num(s['params'], ',')} | {_num(macs, '.3f')} | "
            f"{_num(ms, '.1f')} | {_num(speed, '.2f')}× | {_num(s['map50_95'], '.4f')}{mark} | "
            f"{_num(s['map50'], '.4f')} | {where} | {deployed} | {s['seconds']:.1f} |"
        )
    lines += pi5_lines(r.get("pi5_estimate"), [(s["stage"], s.get("pi5_estimate")) for s in r["stages"]])
    arith_notes = sorted({s["accuracy_note"] for s in r["stages"] if s.get("accuracy_note")})
    if arith_notes:
        lines += ["", "Where the accuracy figures were computed:", ""] + [f"- {n}" for n in arith_notes]
    lat = r.get("latency") or {}
    if "final_vs_baseline" in lat:
        base = r.get("baseline") or {}
        size = (
            "same input size"
            if lat.get("same_size")
            else f"input {lat.get('final_imgsz')} vs the baseline's {lat.get('baseline_imgsz')}: the ratio includes the size change"
        )
        lines += [
            "",
            f"Baseline `{base.get('model')}`: {lat['baseline_ms']:.1f} ms"
            + (f", mAP50-95 {base['map50_95']:.4f}" if "map50_95" in base else "")
            + f"; the final stage is **{lat['final_vs_baseline']:.2f}×** its speed (same run, {size}"
            + ("" if on_target else ", this host's clock")
            + ").",
        ]
    if r.get("frame_ms"):
        f = r["frame_ms"]
        where = "" if r.get("frame_ms_on") == "target" else f" (on {r.get('frame_ms_on')}, not the target)"
        lines += [
            "",
            f"Final model, one frame of the sample image{where}: preprocess {f['pre']:.1f} ms, "
            f"inference {f['infer']:.1f} ms, postprocess {f['post']:.1f} ms.",
        ]
    if r.get("sample"):
        found = ", ".join(r.get("sample_detections", [])) or "nothing"
        lines += ["", f"Sample: `{r['sample']}` — {found}."]
    if r.get("plot"):
        lines += ["", f"![latency vs mAP]({Path(r['plot']).name})"]
    notes = [(s["stage"], n) for s in r["stages"] for n in s["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {stage}: {n}" for stage, n in notes]
    if r.get("failed"):
        lines += ["", f"**Stage `{r['failed']['stage']}` failed:** {r['failed']['error']}"]
    lines.append(f"\nTotal time: {r['seconds']} s.")
    return "\n".join(lines) + "\n"


def write_reports(report: CompileReport | SearchReport, out: Path) -> None:
    write_json(out / "report.json", report.as_dict(), "compile report")
    text = markdown(report)
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text, encoding="utf-8"), "compile report")


def write_plot(compiled: CompileReport, path: Path) -> Path:
    """Latency (x) against mAP50-95 (y) per stage; latency per stage alone when accuracy was not measured.
    The x axis is the target's latency, or this host's where the host cannot time the target (so labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = compiled.as_dict()
    key = "latency_ms" if report["arithmetic"].get("latency") == "target" else "host_latency_ms"
    axis = f"latency (ms, {report['measured_on']})" + ("" if key == "latency_ms" else ": this host, not the target")
    stages = [s | {"latency_ms": s[key]} for s in report["stages"] if s[key] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if any(s["map50_95"] is not None for s in stages):
        for s in stages:
            if s["map50_95"] is None:
                continue
            ax.scatter(s["latency_ms"], s["map50_95"], s=40)
            ax.annotate(
                s["stage"], (s["latency_ms"], s["map50_95"]), textcoords="offset points", xytext=(5, 4)
            )
        base = report.get("baseline") or {}
        lat = report.get("latency") or {}
        if "map50_95" in base and "baseline_ms" in lat:
            ax.scatter(lat["baseline_ms"], base["map50_95"], marker="x", s=50, color="black")
            ax.annotate(
                "baseline", (lat["baseline_ms"], base["map50_95"]), textcoords="offset points", xytext=(5, 4)
            )
        ax.set_ylabel("mAP50-95")
        ax.set_xlabel(axis)
    else:
        ax.barh([s["stage"] for s in stages], [s["latency_ms"] for s in stages])
        ax.set_xlabel(axis)
    ax.set_title(f"{Path(report['source']).name} → {report['target']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    try:
        atomic_write(path, save, "plot")
    finally:
        plt.close(fig)
    return path
