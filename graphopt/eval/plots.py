"""`graphopt eval --plots DIR`: the per-class AP table (per_class.md) and the precision-recall curve
at IoU 0.5 (pr_curve.png), what `yolo val` users look for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import atomic_write


def per_class_markdown(result: Any) -> str:
    lines = [
        f"# Per-class AP: {Path(result.settings['model']).name} on {result.settings['data']}",
        "",
        f"All classes: mAP50 {result.map50:.4f}, mAP50-95 {result.map50_95:.4f} "
        f"({result.images} images, {result.instances} instances).",
        "",
        "| class | id | instances | AP50 | AP50-95 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sorted(result.per_class, key=lambda r: -r["ap50_95"]):
        lines.append(
            f"| {row['class']} | {row['id']} | {row['instances']} | {row['ap50']:.4f} | {row['ap50_95']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def write_plots(result: Any, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.files import FileProblem, output_dir

    try:
        output_dir(folder, "plots folder")
    except FileProblem as exc:
        raise GraphoptError(str(exc)) from None
    table = folder / "per_class.md"
    text = per_class_markdown(result)
    atomic_write(table, lambda tmp: tmp.write_text(text, encoding="utf-8"), "per-class table")
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    curve = result.pr_curve
    if curve.get("precision"):
        ax.plot(curve["recall"], curve["precision"], lw=2, label=f"all classes mAP50 {result.map50:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"precision-recall at IoU 0.5: {Path(result.settings['model']).name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    png = folder / "pr_curve.png"
    try:
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"), "precision-recall plot")
    finally:
        plt.close(fig)
    return [table, png]
