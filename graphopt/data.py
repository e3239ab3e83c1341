"""Image sources for verification and calibration: a folder, an image file, or a YOLO data.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from graphopt.errors import GraphoptError
from runtime.sources import IMAGE_SUFFIXES, images_in


def load_data_yaml(path: Path) -> dict:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GraphoptError(f"{path}: cannot read data.yaml ({str(exc).splitlines()[0]})") from exc
    if not isinstance(cfg, dict):
        raise GraphoptError(f"{path}: not a YOLO data.yaml (expected a mapping)")
    return cfg


def dataset_root(yaml_path: Path, cfg: dict) -> Path:
    root = Path(cfg.get("path") or ".")
    return root if root.is_absolute() else (yaml_path.parent / root)


def split_images(yaml_path: Path, split: str = "val") -> list[Path]:
    """Images of a data.yaml split: a folder, a .txt list of files, or a list of either."""
    cfg = load_data_yaml(yaml_path)
    entry = cfg.get(split) or cfg.get("val") or cfg.get("train")
    if not entry:
        raise GraphoptError(f"{yaml_path}: no '{split}' (or 'val'/'train') entry")
    root = dataset_root(yaml_path, cfg)
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images.extend(images_in(p))
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    images.append(q if q.is_absolute() else root / q)
        elif p.is_file():
            images.append(p)
        else:
            raise GraphoptError(f"{yaml_path}: {split} path {p} does not exist")
    return images


def resolve_images(path: str | Path) -> list[Path]:
    """All image files named by `path` (folder, single image, or data.yaml); error if none."""
    p = Path(path)
    if not p.exists():
        raise GraphoptError(f"{p}: no such file or folder")
    if p.is_dir():
        images = images_in(p)
    elif p.suffix.lower() in (".yaml", ".yml"):
        images = split_images(p)
    elif p.suffix.lower() in IMAGE_SUFFIXES:
        images = [p]
    else:
        raise GraphoptError(f"{p}: expected an image folder, an image or a data.yaml")
    if not images:
        raise GraphoptError(f"{p}: no images found")
    return images


# --- YOLO datasets with labels (evaluation) -------------------------------------------------------


@dataclass
class LabeledImage:
    path: Path
    labels: np.ndarray  # [K, 5]: class id, cx, cy, w, h (normalized)


@dataclass
class Dataset:
    yaml_path: Path
    names: dict[int, str]
    items: list[LabeledImage]
    skipped_labels: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def instances(self) -> int:
        return int(sum(len(i.labels) for i in self.items))


def label_path(image: Path) -> Path:
    """YOLO convention: …/images/…/x.jpg → …/labels/…/x.txt (last 'images' path part)."""
    parts = list(image.parts)
    if "images" in parts:
        idx = len(parts) - 1 - parts[::-1].index("images")
        parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def load_dataset(yaml_path: str | Path, split: str = "val") -> Dataset:
    """Images and labels of a YOLO data.yaml split; bad label lines are skipped and counted."""
    path = Path(yaml_path)
    if not path.exists():
        raise GraphoptError(f"{path}: no such file")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise GraphoptError(f"{path}: expected a YOLO data.yaml")
    cfg = load_data_yaml(path)
    raw_names = cfg.get("names")
    if isinstance(raw_names, dict):
        names = {int(k): str(v) for k, v in raw_names.items()}
    elif isinstance(raw_names, list):
        names = dict(enumerate(map(str, raw_names)))
    else:
        raise GraphoptError(f"{path}: no 'names' list or mapping")
    nc = int(cfg.get("nc", len(names)))
    if nc != len(names):
        raise GraphoptError(f"{path}: nc={nc} but {len(names)} names")
    images = split_images(path, split)
    if not images:
        raise GraphoptError(f"{path}: the {split} split has no images")
    ds = Dataset(path, names, [])
    out_of_range: dict[str, int] = {}
    for image in images:
        labels, bad = _read_labels(label_path(image), nc)
        if bad:
            ds.skipped_labels += bad
            out_of_range[image.name] = bad
        ds.items.append(LabeledImage(image, labels))
    if out_of_range:
        files = ", ".join(list(out_of_range)[:3]) + (" …" if len(out_of_range) > 3 else "")
        ds.problems.append(
            f"skipped {ds.skipped_labels} label line(s) with a class id outside 0..{nc - 1} or a malformed box "
            f"in {len(out_of_range)} file(s) ({files})"
        )
    return ds


def _read_labels(path: Path, nc: int) -> tuple[np.ndarray, int]:
    if not path.exists():
        return np.zeros((0, 5), np.float32), 0
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields[:5]]
        except ValueError:
            bad += 1
            continue
        cls = values[0] if len(values) == 5 else -1
        if (
            len(values) != 5
            or cls != int(cls)
            or not 0 <= cls < nc
            or not all(0 <= v <= 1.0001 for v in values[1:])
        ):
            bad += 1
            continue
        rows.append(values)
    return (np.asarray(rows, np.float32) if rows else np.zeros((0, 5), np.float32)), bad
