"""`graphopt compile`'s report: report.json, report.md and the latency-vs-mAP plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphopt.core.fileio import atomic_write, write_json


def _num(v: float | int | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def search_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# graphopt compile --search: {Path(report['source']).name} → {report['target']}",
        "",
        f"- measured on: {report['measured_on']}; mAP50-95 on the val split of {report['accuracy_data']}",
        f"- calibration: {report['calibration']}",
        f"- reference: {report['reference']} (fp32, unpruned); budget {report['budget']} points",
        f"- **chosen: {report['chosen']}** → `{report['final']}` (with NMS in the graph)",
        "",
        "| config | imgsz | prune | int8 | latency (ms) | speed | mAP50-95 | loss (points) | Pareto |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for c in report["search"]:
        lines.append(
            f"| {'**' + c['name'] + '**' if c['chosen'] else c['name']} | {c['imgsz']} | {c['prune'] or '–'} | "
            f"{'yes' if c['int8'] else 'no'} | {c['latency_ms']:.1f} | {c['speedup']:.2f}× | {c['map50_95']:.4f} | "
            f"{c['loss_points']:.2f} | {'●' if c['pareto'] else ''} |"
        )
    lines += ["", f"![Pareto]({Path(report['plot']).name})", "", f"Total time: {report['seconds']} s."]
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any]) -> str:
    if "search" in report:
        return search_markdown(report)
    lines = [
        f"# graphopt compile: {Path(report['source']).name} → {report['target']}",
        "",
        f"- device: {report['device']} ({report['backend']})",
        f"- measured on: {report['measured_on']}",
    ]
    if report.get("latency_note"):
        lines.append(f"- **{report['latency_note']}**")
    lines.append(f"- calibration: {report['calibration']}")
    lines.append(
        f"- accuracy: mAP on the val split of {report['accuracy_data']}"
        if report["accuracy_data"]
        else "- accuracy: not measured (give `--data` with a labeled data.yaml)"
    )
    if report.get("final"):
        lines.append(f"- deployable model: `{report['final']}`")
    lines += [
        "",
        "| stage | ops | params | MACs (G) | latency (ms) | speed vs first | mAP50-95 | mAP50 | time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["stages"]:
        macs = None if s["macs"] is None else s["macs"] / 1e9
        mark = f" (= {s['accuracy_from']})" if s.get("accuracy_from") and s["map50_95"] is not None else ""
        lines.append(
            f"| {s['stage']} | {_num(s['nodes'], ',')} | {_num(s['params'], ',')} | {_num(macs, '.3f')} | "
            f"{_num(s['latency_ms'], '.1f')} | {_num(s['speedup'], '.2f')}× | {_num(s['map50_95'], '.4f')}{mark} | "
            f"{_num(s['map50'], '.4f')} | {s['seconds']:.1f} |"
        )
    lat = report.get("latency") or {}
    if "final_vs_baseline" in lat:
        base = report.get("baseline", {})
        lines += [
            "",
            f"Baseline `{base.get('model')}`: {lat['baseline_ms']:.1f} ms"
            + (f", mAP50-95 {base['map50_95']:.4f}" if "map50_95" in base else "")
            + f"; the final stage is **{lat['final_vs_baseline']:.2f}×** its speed (same run).",
        ]
    if report.get("frame_ms"):
        f = report["frame_ms"]
        lines += [
            "",
            f"Final model, one frame of the sample image: preprocess {f['pre']:.1f} ms, inference {f['infer']:.1f} ms, "
            f"postprocess {f['post']:.1f} ms.",
        ]
    if report.get("sample"):
        found = ", ".join(report.get("sample_detections", [])) or "nothing"
        lines += ["", f"Sample: `{report['sample']}` — {found}."]
    if report.get("plot"):
        lines += ["", f"![latency vs mAP]({Path(report['plot']).name})"]
    notes = [(s["stage"], n) for s in report["stages"] for n in s["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {stage}: {n}" for stage, n in notes]
    if report.get("failed"):
        lines += ["", f"**Stage `{report['failed']['stage']}` failed:** {report['failed']['error']}"]
    lines.append(f"\nTotal time: {report['seconds']} s.")
    return "\n".join(lines) + "\n"


def write_reports(report: dict[str, Any], out: Path) -> None:
    write_json(out / "report.json", report, "compile report")
    text = markdown(report)
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text, encoding="utf-8"), "compile report")


def write_plot(report: dict[str, Any], path: Path) -> Path:
    """Latency (x) against mAP50-95 (y) per stage; latency per stage alone when accuracy was not measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in report["stages"] if s["latency_ms"] is not None]
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
        ax.set_xlabel(f"latency (ms, {report['measured_on']})")
    else:
        ax.barh([s["stage"] for s in stages], [s["latency_ms"] for s in stages])
        ax.set_xlabel(f"latency (ms, {report['measured_on']})")
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
