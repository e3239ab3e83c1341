"""The upstream training repos (../shared/repos) as tests use them: a writable copy each, and their code
run in a subprocess (yolov5/yolov7/yolov9 each have top-level `models` and `utils` packages, which
would clash in one process). Facts for running them under torch 2.14 come from
../shared/models/README.md: `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` for their own `torch.load`, a font
where they look for `Arial.ttf`, and `dynamo=False` for their `torch.onnx.export` calls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tests.helpers import SHARED

REPOS = SHARED / "repos"

# Prepended to every script: their exporters predate torch 2.14's dynamo default.
_PRELUDE = """
import sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, ".")
import torch
_export = torch.onnx.export
def _torchscript_export(*args, **kwargs):
    kwargs.setdefault("dynamo", False)
    return _export(*args, **kwargs)
torch.onnx.export = _torchscript_export
"""

# The yolov5/yolov7/yolov9 model scripts below: function definitions after these imports, then a main.
_YOLO_IMPORTS = """
import json, torch
from models.yolo import Model
"""

BUILD_FN = """
def build(cfg, out, seed, spread):
    torch.manual_seed(seed)
    model = Model(cfg, ch=3, nc=80)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():  # trained-looking BN statistics, so that folding them is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.1
            m.running_mean = torch.randn(c, generator=gen) * 0.1
            m.running_var = torch.rand(c, generator=gen) + 0.5
    if spread:
        # Rescale each output channel of the anchor head so that its logits have mean 0 and std 2 over an
        # image-like input:
        # scores then differ clearly between anchors (untrained heads give near-equal scores, and NMS
        # comparisons become a matter of fp32 ties).
        model.eval()
        convs = list(getattr(model.model[-1], "m", []))
        seen = []
        hooks = [c.register_forward_hook(lambda m, i, o: seen.append(o.detach())) for c in convs]
        with torch.no_grad():
            model(torch.rand(1, 3, 320, 320, generator=gen))
        for h in hooks:
            h.remove()
        for conv, logits in zip(convs, seen):
            mean, std = logits.mean((0, 2, 3)), logits.std((0, 2, 3)).clamp_min(0.05)
            conv.weight.data *= (2.0 / std).view(-1, 1, 1, 1)
            conv.bias.data = (conv.bias.data - mean) * 2.0 / std
    model.eval().requires_grad_(False)  # as trainers save their EMA model
    torch.save({"model": model, "epoch": -1, "date": None}, out)
    print(json.dumps({"head": type(model.model[-1]).__name__, "layers": len(model.model)}))
    return model
"""

BUILD = _YOLO_IMPORTS + BUILD_FN + """
build(sys.argv[1], sys.argv[2], int(sys.argv[3]), len(sys.argv) > 4 and sys.argv[4] == "spread")
"""

# tools/reparameterization.ipynb, as data: gelan layer idx < split -> dual layer idx + offset; the
# detect layer's cv2/cv3/dfl -> the dual head's cv4/cv5/dfl2 at idx + head_offset. yolov9-e has a
# second range (29 <= idx < 42 -> idx + 7). yolov9-t is not in the notebook; its layout is yolov9-s's.
TWIN_RULES = {
    "t": {"ranges": [(22, 0)], "head": 7},
    "s": {"ranges": [(22, 0)], "head": 7},
    "m": {"ranges": [(22, 1)], "head": 16},
    "c": {"ranges": [(22, 1)], "head": 16},
    "e": {"ranges": [(29, 0), (42, 7)], "head": 7},
}

TWIN_FN = """
def convert_twin(dual, gelan_cfg, out, rules):
    model = Model(gelan_cfg, ch=3, nc=80).eval()
    source, target = dual.state_dict(), model.state_dict()
    for k in target:
        idx = int(k.split(".")[1])
        for limit, offset in rules["ranges"]:
            if idx < limit:
                kr = k.replace(f"model.{idx}.", f"model.{idx + offset}.")
                break
        else:
            to = idx + rules["head"]
            kr = (k.replace(f"model.{idx}.cv2.", f"model.{to}.cv4.").replace(f"model.{idx}.cv3.", f"model.{to}.cv5.")
                   .replace(f"model.{idx}.dfl.", f"model.{to}.dfl2."))
        target[k] -= target[k]
        target[k] += source[kr]
    model.names = dual.names
    torch.save({"model": model, "epoch": -1}, out)
    print(json.dumps({"converted": len(target)}))
"""

TWIN = _YOLO_IMPORTS + TWIN_FN + """
dual_path, gelan_cfg, out, rules = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
convert_twin(torch.load(dual_path, map_location="cpu", weights_only=False)["model"], gelan_cfg, out, rules)
"""

# One interpreter for both (yolov9-e: torch imported once, and its 58 M-parameter checkpoint is not read
# back from disk to be converted), then optionally the repo's export.py on the saved checkpoint, as its
# command line runs it (a child of its own would import torch and the repo again: ~9 CPU-s).
BUILD_AND_TWIN = _YOLO_IMPORTS + BUILD_FN + TWIN_FN + """
import runpy
cfg, dual_out, seed, gelan_cfg, twin_out, rules = sys.argv[1:7]
dual = build(cfg, dual_out, int(seed), False)
convert_twin(dual, gelan_cfg, twin_out, json.loads(rules))
if len(sys.argv) > 7:
    del dual
    sys.argv = ["export.py", *sys.argv[7:]]
    runpy.run_path("export.py", run_name="__main__")
"""

FUSED = """
import numpy as np, onnx, torch
ckpt, onnx_out, npy_in, npy_out = sys.argv[1:5]
model = torch.load(ckpt, map_location="cpu", weights_only=False)["model"].float().eval()
model.fuse()  # the repo's own deploy form: RepConv re-parameterized, BN and implicit layers folded
x = torch.from_numpy(np.load(npy_in))
with torch.no_grad():
    np.save(npy_out, model(x)[0].numpy())
torch.onnx.export(model, x, onnx_out, opset_version=17, input_names=["images"], output_names=["output0"])
print(sum(n.op_type == "Conv" for n in onnx.load(onnx_out).graph.node))
"""

EVAL_OUTPUT = """
import numpy as np, torch
ckpt, npy_in, npy_out = sys.argv[1:4]
model = torch.load(ckpt, map_location="cpu", weights_only=False)["model"].float().eval()
with torch.no_grad():
    np.save(npy_out, model(torch.from_numpy(np.load(npy_in)))[0].numpy())
"""

EXPORT_SCRIPT = """
import runpy
script, args = sys.argv[1], sys.argv[2:]
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def repo_copy(name: str, root: Path) -> Path:
    """A writable copy of ../shared/repos/NAME (their scripts write runs/, caches, __pycache__)."""
    src = REPOS / name
    dst = root / name
    if not dst.exists():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "runs"))
    return dst


def _env(repo: Path) -> dict[str, str]:
    import matplotlib

    home = repo.parent / "home"
    font_dir = home / ".config" / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    font = font_dir / "Arial.ttf"
    if not font.exists():  # they download Arial.ttf otherwise; any TTF does
        shutil.copy(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    return os.environ | {
        "HOME": str(home),
        "YOLO_CONFIG_DIR": str(font_dir),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONWARNINGS": "ignore",
    }


def run(repo: Path, script: str, *args: str | Path, timeout: int = 900) -> str:
    """Run `script` (Python source) with the repo's code importable; its stdout, or the failure."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(script), *map(str, args)],
        cwd=repo,
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"upstream script failed in {repo.name}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def build(repo: Path, cfg: str, out: Path, seed: int = 0, spread: bool = False) -> dict:
    """A model from the repo's own yaml, random weights and randomized BN statistics, saved as the
    repo's trainer saves it (pickled repo classes). `spread`: anchor-head output biases spread out."""
    args = [cfg, out, seed] + (["spread"] if spread else [])
    return json.loads(run(repo, BUILD, *args).strip().splitlines()[-1])


def build_with_twin(
    repo: Path, variant: str, dual: Path, twin: Path, seed: int = 0, export_args: tuple[str | Path, ...] = ()
) -> dict:
    """`build` of models/detect/yolov9-VARIANT.yaml into `dual` and its `converted_twin` into `twin`, in
    one child; `build`'s summary. `export_args`: then the repo's export.py with these arguments, in the
    same child (as `repo_export`)."""
    cfg, gelan = f"models/detect/yolov9-{variant}.yaml", f"models/detect/gelan-{variant}.yaml"
    out = run(repo, BUILD_AND_TWIN, cfg, dual, seed, gelan, twin, json.dumps(TWIN_RULES[variant]), *export_args)
    return next(json.loads(line) for line in out.splitlines() if line.startswith('{"head"'))


def converted_twin(repo: Path, dual: Path, variant: str, out: Path) -> Path:
    """The official converted (gelan) model of a yolov9 dual checkpoint, made as the notebook makes it."""
    run(repo, TWIN, dual, f"models/detect/gelan-{variant}.yaml", out, json.dumps(TWIN_RULES[variant]))
    return out


def fused(repo: Path, ckpt: Path, x: np.ndarray, onnx_out: Path) -> tuple[int, np.ndarray]:
    """The repo's own fused/re-parameterized model (`Model.fuse()`): its ONNX Conv count and its
    output on `x`."""
    npy_in, npy_out = onnx_out.with_suffix(".in.npy"), onnx_out.with_suffix(".out.npy")
    np.save(npy_in, x)
    convs = int(run(repo, FUSED, ckpt, onnx_out, npy_in, npy_out).strip().splitlines()[-1])
    return convs, np.load(npy_out)


def eval_output(repo: Path, ckpt: Path, x: np.ndarray, work: Path) -> np.ndarray:
    """The checkpoint's eval-mode output (first of the head's return) on `x`, with the repo's code."""
    np.save(work / "in.npy", x)
    run(repo, EVAL_OUTPUT, ckpt, work / "in.npy", work / "out.npy")
    return np.load(work / "out.npy")


# yolov5's export.py as a torch-2.14 user who calls it through torch's default (dynamo) exporter
# with the head left in its training-output form gets it: the raw per-scale maps leak as outputs
# (`clone`, `clone_1`, `clone_2`) beside `output0`.
LEAKY_EXPORT = """
import runpy
_plain = torch.onnx.export
def _leaky(model, *args, **kwargs):
    for m in model.modules():
        if type(m).__name__ == "Detect":
            m.export = False  # the head returns (decoded, raw maps)
    kwargs["dynamo"] = True
    return _plain(model, *args, **kwargs)
torch.onnx.export = _leaky
sys.argv = ["export.py", *sys.argv[1:]]
runpy.run_path("export.py", run_name="__main__")
"""


def repo_export(repo: Path, *args: str | Path, leaky: bool = False) -> str:
    """The repo's own export.py with these arguments (their command line, unchanged)."""
    if leaky:
        return run(repo, LEAKY_EXPORT, *args)
    return run(repo, EXPORT_SCRIPT, "export.py", *args)


# PyTorch_YOLOv4: a Darknet model from the repo's cfg, random weights and randomized BN statistics,
# written as real Darknet .weights by the repo's own save_weights; its eval-mode output on the given
# inputs (a .npy batch) saved beside it.
DARKNET_REFERENCE = """
import numpy as np, torch
from models.models import Darknet, save_weights
cfg, weights, x_path, out_path, size, seed, pt_path, as_mish_cuda = sys.argv[1:9]
torch.manual_seed(int(seed))
model = Darknet(cfg, img_size=(int(size), int(size)))
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.1, 0.1)
    elif isinstance(m, torch.nn.Conv2d):
        torch.nn.init.normal_(m.weight, std=(1.0 / (m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3])) ** 0.5)
model.eval()
save_weights(model, weights)
x = torch.from_numpy(np.load(x_path))
with torch.no_grad():
    y = model(x)[0]
np.save(out_path, y.numpy())
if pt_path:
    if as_mish_cuda == "1":  # pickled where the CUDA extension was installed: `mish_cuda.MishCuda`
        import types
        mish_cuda = types.ModuleType("mish_cuda")
        class MishCuda(torch.nn.Module):
            def forward(self, x):
                return x * torch.nn.functional.softplus(x).tanh()
        MishCuda.__module__ = "mish_cuda"
        mish_cuda.MishCuda = MishCuda
        sys.modules["mish_cuda"] = mish_cuda
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if type(child).__name__ == "Mish":
                    setattr(parent, name, MishCuda())
    torch.save(model, pt_path)  # as its train.py writes init.pt, and as models/export.py loads it
print(len(model.module_list))
"""


def darknet_reference(
    repo: Path,
    cfg: str,
    weights: Path,
    x: np.ndarray,
    work: Path,
    seed: int = 0,
    pt: Path | None = None,
    mish_cuda: bool = False,
) -> np.ndarray:
    """The repo's Darknet(cfg) output on `x` [B,3,S,S], after writing its random weights to `weights`
    (and, with `pt`, the pickled model; `mish_cuda`: its Mish layers pickled as mish_cuda.MishCuda)."""
    x_path, out_path = work / f"{weights.stem}.x.npy", work / f"{weights.stem}.y.npy"
    np.save(x_path, x)
    run(repo, DARKNET_REFERENCE, cfg, weights, x_path, out_path, x.shape[-1], seed, pt or "", int(mish_cuda))
    return np.load(out_path)
