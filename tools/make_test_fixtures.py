"""Write the small ONNX fixtures the torch-free tests use: the reference zoo exported at 128 px.

    python tools/make_test_fixtures.py [--out tests/fixtures]

The zoo's models have fixed random weights and BN statistics (frontends/zoo), so a rerun writes the
same graphs; `tests/test_zoo_export.py` checks that the committed files still match a fresh export.
Needs torch (the exporter); the tests that read the files do not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMGSZ = 128


def fixture_name(zoo_name: str) -> str:
    return f"{zoo_name}.onnx"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data")
    args = parser.parse_args(argv)
    from frontends import export
    from frontends.zoo import BUILDERS

    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        path = args.out / fixture_name(name)
        path.unlink(missing_ok=True)
        export(build(), path, imgsz=IMGSZ)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
