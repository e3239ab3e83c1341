"""Image sources for verification and calibration: a folder, an image file, or a YOLO data.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from graphopt.errors import GraphoptError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


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
            images.extend(_images_in(p))
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
        images = _images_in(p)
    elif p.suffix.lower() in (".yaml", ".yml"):
        images = split_images(p)
    elif p.suffix.lower() in IMAGE_SUFFIXES:
        images = [p]
    else:
        raise GraphoptError(f"{p}: expected an image folder, an image or a data.yaml")
    if not images:
        raise GraphoptError(f"{p}: no images found")
    return images
