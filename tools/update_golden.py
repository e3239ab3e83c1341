"""Regenerate the golden op-count snapshots in tests/golden/ after an intended change.

    python tools/update_golden.py            # zoo fixtures (tests/fixtures) × simplify, lossless
    python tools/update_golden.py --real     # also the real checkpoints in ../shared (needs torch)

Each snapshot is written by `graphopt check MODEL --golden FILE --update` on the recipe's output,
exactly what tests/eval/test_golden.py checks. Review the diff before committing it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOLDEN = ROOT / "tests" / "golden"
RECIPES = ("simplify", "lossless")
ZOO = ("yolov5", "yolov8", "gelan", "yolov9-dual")
REAL = {"yolov9t-ball": "yolov9t-ball.pt", "yolov5n-coco": "yolov5n-coco.pt"}


def _graphopt(*args: object) -> None:
    """One graphopt command in-process, its tables silenced (only what check --update writes is shown)."""
    import contextlib
    import io

    from graphopt.cli import main

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main([str(a) for a in args])
    except SystemExit as exc:
        if exc.code:
            raise SystemExit(f"graphopt {' '.join(map(str, args))} failed ({exc.code})") from None
    finally:
        if args[0] == "check":
            print(out.getvalue().strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also the real checkpoints in ../shared")
    args = parser.parse_args(argv)
    from tools.make_test_fixtures import fixture_name

    models = {f"zoo-{name}": ROOT / "tests" / "fixtures" / fixture_name(name) for name in ZOO}
    with tempfile.TemporaryDirectory(prefix="graphopt-golden-") as tmp:
        work = Path(tmp)
        if args.real:
            image = ROOT.parent / "shared" / "data" / "coco128" / "images" / "train2017" / "000000000368.jpg"
            for stem, ckpt in REAL.items():
                models[stem] = work / f"{stem}.onnx"
                _graphopt("export", ROOT.parent / "shared" / "models" / ckpt, "-o", models[stem], "--data", image)
        for stem, model in models.items():
            for recipe in RECIPES:
                out = work / f"{stem}.{recipe}.onnx"
                _graphopt("optimize", model, "-o", out, "--recipe", recipe, "--json")
                _graphopt("check", out, "--golden", GOLDEN / f"{stem}.{recipe}.json", "--update")


if __name__ == "__main__":
    main()
