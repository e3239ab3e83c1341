"""Copy a YOLO dataset keeping only some classes, with ids remapped to 0..k-1 and a matching data.yaml.

Training on a subset with the original ids crashes on `nc` (ids ≥ nc) — this writes labels whose
ids run 0..k-1 in the order you give the classes, and `nc`/`names` to match.

    python tools/filter_classes.py ../shared/data/coco128/data.yaml out/ --classes person,dog [--keep-empty] [--link]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphopt.core.errors import GraphoptError  # noqa: E402
from graphopt.data.datasets import dataset_root, label_path, load_data_yaml, split_images  # noqa: E402

SPLITS = ("train", "val", "test")


def _names(cfg: dict[str, Any], path: Path) -> dict[int, str]:
    raw = cfg.get("names")
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return dict(enumerate(map(str, raw)))
    raise GraphoptError(f"{path}: no 'names' in data.yaml")


def resolve_classes(wanted: list[str], names: dict[int, str]) -> list[int]:
    """Class ids for names or ids, in the order given (that order becomes the new ids)."""
    by_name = {v: k for k, v in names.items()}
    ids = []
    for item in wanted:
        if item in by_name:
            ids.append(by_name[item])
        elif item.isdigit() and int(item) in names:
            ids.append(int(item))
        else:
            raise GraphoptError(f"unknown class '{item}' (names: {', '.join(list(by_name)[:10])} …)")
    if len(set(ids)) != len(ids):
        raise GraphoptError("a class is listed twice")
    return ids


def filter_dataset(
    data_yaml: Path, out: Path, classes: list[str], keep_empty: bool = False, link: bool = False
) -> dict[str, Any]:
    cfg = load_data_yaml(data_yaml)
    names = _names(cfg, data_yaml)
    keep = resolve_classes(classes, names)
    remap = {old: new for new, old in enumerate(keep)}
    if out.exists() and any(out.iterdir()):
        raise GraphoptError(f"{out}: not empty; choose a new folder")
    root = dataset_root(data_yaml, cfg)
    written: dict[Path, str] = {}  # source image folder → output split folder (splits may share one)
    counts = {"images": 0, "labels": 0, "dropped_labels": 0, "skipped_images": 0, "bad_lines": 0}
    new_cfg: dict[str, Any] = {
        "path": ".",
        "nc": len(keep),
        "names": {i: names[c] for i, c in enumerate(keep)},
    }
    for split in SPLITS:
        if not cfg.get(split):
            continue
        src_key = Path(str(cfg[split]))
        src_dir = (src_key if src_key.is_absolute() else root / src_key).resolve()
        if src_dir in written:
            new_cfg[split] = written[src_dir]
            continue
        rel = f"images/{split}"
        written[src_dir] = rel
        new_cfg[split] = rel
        for image in split_images(data_yaml, split):
            lines, n_bad, n_dropped = _filtered_lines(label_path(image), remap)
            counts["bad_lines"] += n_bad
            counts["dropped_labels"] += n_dropped
            if not lines and not keep_empty:
                counts["skipped_images"] += 1
                continue
            dst_img = out / rel / image.name
            dst_lbl = out / "labels" / split / (image.stem + ".txt")
            dst_img.parent.mkdir(parents=True, exist_ok=True)
            dst_lbl.parent.mkdir(parents=True, exist_ok=True)
            if link:
                os.symlink(image.resolve(), dst_img)
            else:
                shutil.copy2(image, dst_img)
            dst_lbl.write_text("".join(lines))
            counts["images"] += 1
            counts["labels"] += len(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.yaml").write_text(yaml.safe_dump(new_cfg, sort_keys=False, allow_unicode=True))
    return {"data": str(out / "data.yaml"), "classes": new_cfg["names"], **counts}


def _filtered_lines(path: Path, remap: dict[int, int]) -> tuple[list[str], int, int]:
    if not path.exists():
        return [], 0, 0
    lines, bad, dropped = [], 0, 0
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            cls = int(float(fields[0]))
        except ValueError:
            bad += 1
            continue
        if cls in remap:
            lines.append(" ".join([str(remap[cls]), *fields[1:]]) + "\n")
        else:
            dropped += 1
    return lines, bad, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="source data.yaml")
    parser.add_argument("out", type=Path, help="new dataset folder (must not exist or be empty)")
    parser.add_argument(
        "--classes", required=True, help="comma-separated class names or ids; order = new ids"
    )
    parser.add_argument("--keep-empty", action="store_true", help="keep images with no remaining labels")
    parser.add_argument("--link", action="store_true", help="symlink images instead of copying")
    args = parser.parse_args(argv)
    try:
        result = filter_dataset(
            args.data,
            args.out,
            [c.strip() for c in args.classes.split(",") if c.strip()],
            keep_empty=args.keep_empty,
            link=args.link,
        )
    except GraphoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {result['data']}: {result['images']} images, {result['labels']} labels, classes {result['classes']}"
        f" ({result['skipped_images']} images without kept labels skipped, {result['dropped_labels']} labels dropped)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
