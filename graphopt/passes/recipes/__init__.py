"""Named pipelines as data: `graphopt/passes/recipes/NAME.yaml`, or any YAML file of the same form.

description: what the recipe is for
target: any            # optional: arm | x86 | any
passes:
  - simplify                      # a pass with its default options
  - fold-bn: {}                   # the same, as a mapping
  - quantize: {calibration: percentile}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graphopt.core.errors import GraphoptError
from graphopt.core.fileio import read_text

RECIPE_DIR = Path(__file__).parent


@dataclass
class Recipe:
    name: str
    description: str
    target: str | None
    steps: list[tuple[str, dict[str, Any]]]


def available() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        if path.suffix in (".yaml", ".yml"):
            raise GraphoptError(f"{path}: recipe file not found")
        path = RECIPE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise GraphoptError(f"unknown recipe '{name_or_path}'; available: {', '.join(available())}")
    try:
        raw = yaml.safe_load(read_text(path, "recipe YAML file"))
    except (yaml.YAMLError, RecursionError) as exc:
        raise GraphoptError(f"{path}: cannot read recipe ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("passes"), list) or not raw["passes"]:
        raise GraphoptError(f"{path}: a recipe needs a non-empty 'passes' list")
    steps: list[tuple[str, dict[str, Any]]] = []
    for item in raw["passes"]:
        if isinstance(item, str):
            steps.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            ((name, options),) = item.items()
            if options is not None and not isinstance(options, dict):
                raise GraphoptError(f"{path}: options of pass '{name}' must be a mapping")
            steps.append((str(name), dict(options or {})))
        else:
            raise GraphoptError(f"{path}: each pass is a name or a one-key mapping, got {item!r}")
    return Recipe(path.stem, str(raw.get("description", "")), raw.get("target"), steps)
