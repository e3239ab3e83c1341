"""Image sources for verification and calibration: a folder, an image file, or a YOLO data.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import read_text
from runtime.files import note_input
from runtime.sources import IMAGE_SUFFIXES, SourceError, images_in


def load_data_yaml(path: Path) -> dict:
    text = read_text(path, "YOLO data.yaml")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphoptError(f"{path}: cannot read data.yaml ({str(exc).splitlines()[0]})") from exc
    except RecursionError:
        raise GraphoptError(f"{path}: cannot read data.yaml (nested too deeply)") from None
    if not isinstance(cfg, dict):
        raise GraphoptError(f"{path}: not a YOLO data.yaml (expected a mapping)")
    for key in ("path", "train", "val", "test"):
        value = cfg.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise GraphoptError(f"{path}: '{key}' must be a path or a list of paths, got {value!r}"[:300])
    return cfg


def dataset_root(yaml_path: Path, cfg: dict) -> Path:
    root = Path(cfg.get("path") or ".")
    return root if root.is_absolute() else (yaml_path.parent / root)


def _list_file(path: Path, root: Path) -> list[Path]:
    """A YOLO list file: one image per line; `./x` and other relative paths from the dataset root."""
    images = []
    for line in read_text(path, "image list (.txt)").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            q = Path(entry)
            images.append(q if q.is_absolute() else root / q)
    return images


def split_images(yaml_path: Path, split: str = "val") -> list[Path]:
    """Images of a data.yaml split: a folder, a .txt list of files, or a list of either."""
    cfg = load_data_yaml(yaml_path)
    entry = cfg.get(split) or cfg.get("val") or cfg.get("train")
    if not entry:
        raise GraphoptError(f"{yaml_path}: no '{split}' (or 'val'/'train') entry")
    if not cfg.get(split):
        split = "val" if cfg.get("val") else "train"
    root = dataset_root(yaml_path, cfg)
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            try:
                images.extend(images_in(p))
            except SourceError as exc:
                raise GraphoptError(f"{yaml_path}: {split} path {exc}") from None
        elif p.suffix == ".txt" and p.exists():
            images.extend(_list_file(p, root))
        elif p.is_file():
            images.append(p)
        else:
            raise GraphoptError(f"{yaml_path}: {split} path {p} does not exist")
    return images


def resolve_images(path: str | Path, split: str = "train") -> list[Path]:
    """All image files named by `path`: a folder, one image, a YOLO list file (.txt, one image per line,
    relative to its folder), or a data.yaml — whose `split` is used: `train` for what a pass fits on
    (calibration, pruning recovery), `val` for what accuracy is reported on. Error if none."""
    p = Path(path)
    if not p.exists():
        raise GraphoptError(f"{p}: no such file or folder")
    if p.is_dir():
        images = images_in(p)
    elif p.suffix.lower() in (".yaml", ".yml"):
        images = split_images(p, split)
    elif p.suffix.lower() == ".txt":
        images = _list_file(p, p.parent)
    elif p.suffix.lower() in IMAGE_SUFFIXES:
        images = [p]
    else:
        raise GraphoptError(f"{p}: expected an image folder, an image, a list file (.txt) or a data.yaml")
    if not images:
        raise GraphoptError(f"{p}: no images found")
    for image in images:  # inputs of this command: no output may land on one
        note_input(image)
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
    unusable: list[str] = field(default_factory=list)  # images skipped: their label file is unreadable

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


def _class_names(path: Path, cfg: dict) -> dict[int, str]:
    raw = cfg.get("names")
    if isinstance(raw, dict):
        names: dict[int, str] = {}
        for key, value in raw.items():
            if isinstance(key, bool) or not isinstance(key, int) or key < 0:
                raise GraphoptError(f"{path}: 'names' keys must be class ids 0, 1, …; got {key!r}"[:200])
            names[key] = str(value)
    elif isinstance(raw, list):
        names = dict(enumerate(map(str, raw)))
    else:
        raise GraphoptError(f"{path}: no 'names' list or mapping")
    if not names:
        raise GraphoptError(f"{path}: 'names' is empty")
    if sorted(names) != list(range(len(names))):
        raise GraphoptError(f"{path}: 'names' ids must be 0..{len(names) - 1} without gaps")
    nc = cfg.get("nc", len(names))
    if isinstance(nc, bool) or not isinstance(nc, int):
        raise GraphoptError(f"{path}: 'nc' must be an integer, got {nc!r}"[:200])
    if nc != len(names):
        raise GraphoptError(f"{path}: nc={nc} but {len(names)} names")
    return names


def load_dataset(yaml_path: str | Path, split: str = "val") -> Dataset:
    """Images and labels of a YOLO data.yaml split; bad label lines are skipped and counted."""
    path = Path(yaml_path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise GraphoptError(f"{path}: expected a YOLO data.yaml")
    cfg = load_data_yaml(path)
    names = _class_names(path, cfg)
    nc = len(names)
    images = split_images(path, split)
    if not images:
        raise GraphoptError(f"{path}: the {split} split has no images")
    ds = Dataset(path, names, [])
    out_of_range: dict[str, int] = {}
    polygons = 0
    for image in images:
        try:
            labels, bad, poly = _read_labels(label_path(image), nc)
        except GraphoptError as exc:
            ds.unusable.append(f"{image.name} ({exc})")
            continue
        polygons += poly
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
    if polygons:
        ds.problems.append(
            f"{polygons} polygon (segmentation) label line(s) evaluated as their bounding boxes"
        )
    if ds.unusable:
        ds.problems.append(
            f"skipped {len(ds.unusable)} image(s) whose label file cannot be read: "
            + "; ".join(ds.unusable[:3])
        )
    if not ds.items:
        raise GraphoptError(f"{path}: no image of the {split} split has a readable label file")
    return ds


def _read_labels(path: Path, nc: int) -> tuple[np.ndarray, int, int]:
    """(rows [K, 5], bad lines, polygon lines). A polygon `cls x1 y1 … xn yn` becomes its bounding box,
    as YOLO trainers do; a missing file means no objects; an unreadable one raises."""
    if not path.exists() and not path.is_symlink():
        return np.zeros((0, 5), np.float32), 0, 0
    try:
        text = read_text(path, "YOLO label file")
    except GraphoptError as exc:
        raise GraphoptError(str(exc).removeprefix(f"{path}: ")) from None
    rows, bad, polygons = [], 0, 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad += 1
            continue
        coords = values[1:]
        if len(coords) >= 6 and len(coords) % 2 == 0:  # a polygon of 3+ points
            xs, ys = np.asarray(coords[0::2]), np.asarray(coords[1::2])
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            coords = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
            polygons += 1
        cls = values[0]
        if (
            len(coords) != 4
            or not np.isfinite(values).all()
            or cls != int(cls)
            or not 0 <= cls < nc
            or not all(0 <= v <= 1.0001 for v in coords)
        ):
            bad += 1
            continue
        rows.append([cls, *coords])
    return (np.asarray(rows, np.float32) if rows else np.zeros((0, 5), np.float32)), bad, polygons
