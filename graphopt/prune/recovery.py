"""Getting back what pruning cost, without labels (calibration images only):

- `bn`: bias compensation. A removed input channel carried, on average, μ_c into each consumer
  conv; that mean contribution (Σ over the kernel of W[:, c] · μ_c, measured on the unpruned model)
  moves into the consumer's bias — the BN shift such a channel would have left behind once folded.
- `lstsq`: every consumer of a pruned layer is re-fitted, layer by layer in graph order, to reproduce
  its original output from the pruned model's actual input (the ThiNet / He et al. 2017 idea, in
  closed form: ridge least squares on sampled output positions).
- `distill`: a short fine-tune of the pruned model's weights (onnx2torch, Adam) to match the
  unpruned model's outputs on the calibration images; it needs torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphopt.core import ort_session
from graphopt.core.errors import GraphoptError
from graphopt.core.graph import Names, constant_value
from graphopt.core.ort_session import Feed
from graphopt.prune.alloc import channel_means, cut_at, with_outputs
from graphopt.prune.channels import ChannelGraph

SAMPLES_PER_FEED = 1024  # output positions per image and layer for the least-squares fits


@dataclass
class Consumer:
    """A (non-depthwise) conv that loses input channels, with what recovery needs from before pruning."""

    name: str
    input: str
    output: str
    removed_cols: list[int]
    kept_cols: list[int]
    kept_rows: list[int]  # its own output channels that stay (it may be pruned itself)
    weight: np.ndarray  # unpruned weight


def consumers(cg: ChannelGraph, removed: set[int], downstream: bool = False) -> list[Consumer]:
    """Record, before `channels.apply`, the convs whose inputs lose channels (graph order); with
    `downstream`, every (non-depthwise, ungrouped) conv after them too — its input differs from the
    unpruned model's even where no channel went, and re-fitting it stops the error travelling on."""
    nodes = {n.name: n for n in cg.graph.nodes}
    touched: set[str] = set()  # tensors whose values differ from the unpruned model's
    out = []
    for node in cg.graph.nodes:
        reads_touched = any(t is not None and t.name in touched for t in node.inputs)
        units = cg.conv_inputs.get(node.name)
        gone = [i for i, u in enumerate(units or []) if cg.root(u) in removed]
        own = cg.producers.get(node.name)
        shrinks = own is not None and any(cg.root(u) in removed for u in own)
        if (
            node.op == "Conv"
            and units is not None
            and node.name not in cg.depthwise
            and (gone or (downstream and reads_touched))
        ):
            kept = [i for i, u in enumerate(units) if cg.root(u) not in removed]
            w = constant_value(nodes[node.name].inputs[1])
            rows = (
                list(range(w.shape[0]))
                if own is None
                else [i for i, u in enumerate(own) if cg.root(u) not in removed]
            )
            out.append(
                Consumer(node.name, node.inputs[0].name, node.outputs[0].name, gone, kept, rows, w.copy())
            )
        if gone or shrinks or reads_touched:
            touched.update(t.name for t in node.outputs)
    return out


def _bias(node: gs.Node, cout: int) -> np.ndarray:
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
        return constant_value(node.inputs[2]).astype(np.float64)
    return np.zeros(cout, np.float64)


def _set(node: gs.Node, names: Names, weight: np.ndarray | None, bias: np.ndarray, dtype: Any) -> None:
    if weight is not None:
        node.inputs[1] = gs.Constant(names(f"{node.name}.weight"), weight.astype(dtype))
    b = gs.Constant(names(f"{node.name}.bias"), bias.astype(dtype))
    if len(node.inputs) > 2:
        node.inputs[2] = b
    else:
        node.inputs.append(b)


def bias_compensation(
    graph: gs.Graph, original: onnx.ModelProto, found: list[Consumer], feeds: list[Feed]
) -> dict[str, Any]:
    """Move each removed input channel's mean contribution into its consumer's bias."""
    start = time.perf_counter()
    means = channel_means(original, feeds, sorted({c.input for c in found}), absolute=False)
    nodes = {n.name: n for n in graph.nodes}
    names = Names(graph)
    for c in found:
        node = nodes[c.name]
        mu = means[c.input][c.removed_cols]
        delta = (c.weight[c.kept_rows][:, c.removed_cols].astype(np.float64).sum(axis=(2, 3)) * mu).sum(1)
        _set(node, names, None, _bias(node, len(c.kept_rows)) + delta, c.weight.dtype)
    return {"recovered_layers": len(found), "recovery_seconds": round(time.perf_counter() - start, 2)}


def _conv_attrs(node: onnx.NodeProto) -> tuple[list[int], list[int], list[int]]:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    strides = list(attrs.get("strides", [1, 1]))
    dil = list(attrs.get("dilations", [1, 1]))
    return pads, strides, dil


def _positions(rng: np.random.Generator, oh: int, ow: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    flat = rng.choice(oh * ow, size=min(count, oh * ow), replace=False)
    return flat // ow, flat % ow


def _patches(
    x: np.ndarray,
    oy: np.ndarray,
    ox: np.ndarray,
    k: tuple[int, int],
    pads: list[int],
    strides: list[int],
    dil: list[int],
) -> np.ndarray:
    """[P, C·kh·kw] input patches of the sampled output positions (x: [1, C, H, W])."""
    xp = np.pad(x[0], ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    kh, kw = k
    rows = []
    for dy in range(kh):
        for dx in range(kw):
            rows.append(xp[:, oy * strides[0] + dy * dil[0], ox * strides[1] + dx * dil[1]])  # [C, P]
    return np.stack(rows, axis=1).reshape(x.shape[1] * kh * kw, -1).T  # C-major like the weight


def least_squares(
    graph: gs.Graph, original: onnx.ModelProto, found: list[Consumer], feeds: list[Feed], seed: int = 0
) -> dict[str, Any]:
    """Re-fit each consumer (graph order) on the pruned model's input to reproduce its original output;
    `graph` is the pruned graph, updated in place (later fits see earlier ones)."""
    from graphopt.core.graph import to_model

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    onodes = {n.name: n for n in original.graph.node}
    nodes = {n.name: n for n in graph.nodes}
    names = Names(graph)
    # sampled output positions and the original outputs there, for every consumer, in one pass
    targets: dict[str, list[np.ndarray]] = {c.name: [] for c in found}
    spots: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c.name: [] for c in found}
    outs = [c.output for c in found]
    sess = ort_session.session(with_outputs(original, outs))
    for feed in feeds:
        values = dict(zip(outs, sess.run(outs, feed), strict=True))
        for c in found:
            y = values[c.output]
            oy, ox = _positions(rng, y.shape[2], y.shape[3], SAMPLES_PER_FEED)
            spots[c.name].append((oy, ox))
            targets[c.name].append(y[0][c.kept_rows][:, oy, ox].T.astype(np.float64))  # [P, Cout kept]
    for wave in _waves(graph, found):
        # one session per wave, cut at the wave's inputs: a consumer's input depends only on fits of
        # earlier waves, so this equals fitting one consumer after another, with far fewer runs
        inputs = sorted({c.input for c in wave})
        sess = ort_session.session(cut_at(to_model(graph, original), inputs))
        xs: dict[str, list[np.ndarray]] = {c.name: [] for c in wave}
        for i, feed in enumerate(feeds):
            values = dict(zip(inputs, sess.run(inputs, feed), strict=True))
            for c in wave:
                oy, ox = spots[c.name][i]
                pads, strides, dil = _conv_attrs(onodes[c.name])
                k = (c.weight.shape[2], c.weight.shape[3])
                xs[c.name].append(_patches(values[c.input].astype(np.float64), oy, ox, k, pads, strides, dil))
        for c in wave:
            _least_squares_fit(c, xs.pop(c.name), targets[c.name], nodes[c.name], names)
    return {"recovered_layers": len(found), "recovery_seconds": round(time.perf_counter() - start, 2)}


def _waves(graph: gs.Graph, found: list[Consumer]) -> list[list[Consumer]]:
    """`found` in waves: wave w holds the consumers with exactly w consumers upstream on their longest
    path, so every consumer upstream of a wave's input is in an earlier wave."""
    fitted = {c.name for c in found}
    graph.toposort()
    level: dict[int, int] = {}  # id(node) → consumers strictly upstream of its inputs
    for node in graph.nodes:
        level[id(node)] = max(
            (
                level[id(p)] + (p.name in fitted)
                for t in node.inputs
                for p in t.inputs
                if id(p) in level
            ),
            default=0,
        )
    by_name = {n.name: level[id(n)] for n in graph.nodes}
    waves: dict[int, list[Consumer]] = {}
    for c in found:
        waves.setdefault(by_name[c.name], []).append(c)
    return [waves[w] for w in sorted(waves)]


def _least_squares_fit(c: Consumer, xs: list[np.ndarray], targets: list[np.ndarray], node: gs.Node, names: Names) -> None:
    """Ridge least squares of `c`'s kept weights and bias on its sampled input patches."""
    k = (c.weight.shape[2], c.weight.shape[3])
    a = np.concatenate(xs)
    a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    y = np.concatenate(targets)
    gram = a.T @ a
    ridge = 1e-4 * np.trace(gram) / len(gram)
    solution = np.linalg.solve(gram + ridge * np.eye(len(gram)), a.T @ y)  # [C·k·k + 1, Cout]
    weight = solution[:-1].T.reshape(len(c.kept_rows), len(c.kept_cols), *k)
    _set(node, names, weight, solution[-1], c.weight.dtype)


def _trainable(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """`model` cut at `outputs`, with a free input size (Resize by `sizes` becomes Resize by scales), so
    that it converts to torch and trains at any resolution."""
    from onnx import helper, numpy_helper

    from graphopt.core.graph import infer_shapes

    m = infer_shapes(model)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in (*m.graph.value_info, *m.graph.input)
    }
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    names = Names(m)
    for node in m.graph.node:
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3] in inits:
            sizes, before = inits[node.input[3]], shapes[node.input[0]]
            scales = np.array([1, 1, sizes[2] / before[2], sizes[3] / before[3]], np.float32)
            name = names(f"{node.name}.scales")
            m.graph.initializer.append(numpy_helper.from_array(scales, name))
            node.input[2] = name
            del node.input[3]
    del m.graph.output[:]
    for name in outputs:
        m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del m.graph.value_info[:]
    return m


def _head_loss(head: str | None, nc: int) -> Any:
    """Distillation loss on the raw head maps: soft-target BCE on objectness/class logits and a box term
    weighted by the teacher's confidence (YOLOv5 anchors: sigmoid xywh; anchor-free: DFL bins, KL)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    def anchor(s: Any, t: Any) -> Any:
        b, c, h, w = t.shape
        s, t = s.view(b, 3, c // 3, h, w), torch.sigmoid(t.view(b, 3, c // 3, h, w))
        conf = t[:, :, 4]
        obj = F.binary_cross_entropy_with_logits(s[:, :, 4], conf)
        cls = F.binary_cross_entropy_with_logits(s[:, :, 5:], t[:, :, 5:], reduction="none").mean(2)
        box = ((torch.sigmoid(s[:, :, :4]) - t[:, :, :4]) ** 2).sum(2)
        return obj + ((cls + 10 * box) * conf).sum() / conf.sum().clamp_min(1e-6)

    def free(student: list, teacher: list) -> Any:
        total = 0
        cls_maps = [i for i, t in enumerate(teacher) if t.shape[1] == nc]
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            if i in cls_maps:
                total = total + F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))
            else:  # box distributions: 4 × reg_max bins, weighted by the matching class map's confidence
                b, c, h, w = t.shape
                r = c // 4
                conf = torch.sigmoid(teacher[_partner(i, cls_maps, teacher)]).amax(1)  # [B, H, W]
                kl = F.kl_div(
                    F.log_softmax(s.view(b, 4, r, h, w), 2),
                    F.softmax(t.view(b, 4, r, h, w), 2),
                    reduction="none",
                ).sum((1, 2))
                total = total + (kl * conf).sum() / conf.sum().clamp_min(1e-6)
        return total

    def mse(student: list, teacher: list) -> Any:
        return sum(((s - t) ** 2).mean() / (t.var() + 1e-6) for s, t in zip(student, teacher, strict=True))

    if head == "yolov5":
        return lambda s, t: sum(anchor(a, b) for a, b in zip(s, t, strict=True))
    if head == "anchor-free" and nc:
        return free
    return mse


def _partner(i: int, cls_maps: list[int], maps: list) -> int:
    """The class map of the same scale (same spatial size) as box map `i`."""
    return next(j for j in cls_maps if maps[j].shape[2:] == maps[i].shape[2:])


def distill(
    graph: gs.Graph,
    original: onnx.ModelProto,
    images: list[Any],
    preprocess: Any,
    head: str | None,
    nc: int,
    steps: int,
    size: int = 320,
    lr: float = 1e-4,
    batch: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune the pruned graph's conv weights to match the unpruned model's raw head outputs on
    augmented calibration images (flip, random crop; no labels), at `size` px, then write them back."""
    import warnings

    try:
        import torch
        from onnx2torch import convert
    except ImportError as exc:
        raise GraphoptError(
            "prune.recover=distill needs torch and onnx2torch: pip install 'graphopt[torch]'"
        ) from exc
    from graphopt.core.graph import to_model
    from graphopt.core.head import find_head_tail
    from runtime.sources import read_image

    start = time.perf_counter()
    warnings.filterwarnings("ignore", module="onnx2torch")  # its deprecation notes on every Slice
    tail = find_head_tail(gs.import_onnx(original))
    outputs = [n.outputs[0].name for n in tail.output_convs]
    student = convert(_trainable(to_model(graph, original), outputs))
    teacher = convert(_trainable(original, outputs)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    frames = [f for f in (read_image(p) for p in images) if f is not None]
    if not frames:
        raise GraphoptError("prune.recover=distill: no readable calibration image")
    torch.manual_seed(seed)
    batches = _augmented_batches(frames, preprocess, size, batch, np.random.default_rng(seed))
    first, last = _fit(student, teacher, batches, _head_loss(head, nc), steps, lr)
    written = _write_back(graph, student)
    return {
        "recovery_seconds": round(time.perf_counter() - start, 2),
        "distill_steps": steps,
        "distill_size": size,
        "distill_loss": [first, last],
        "distilled_convs": written,
    }


def _augmented_batches(
    frames: list[np.ndarray], preprocess: Any, size: int, batch: int, rng: np.random.Generator
) -> Iterator[Any]:
    """Endless batches of calibration frames, flipped half the time and randomly cropped (no labels)."""
    import torch

    while True:
        xs = []
        for _ in range(batch):
            f = frames[rng.integers(len(frames))]
            if rng.random() < 0.5:
                f = f[:, ::-1]
            h, w = f.shape[:2]
            s = rng.uniform(0.6, 1.0)
            ch, cw = max(8, int(h * s)), max(8, int(w * s))
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            xs.append(preprocess(np.ascontiguousarray(f[y0 : y0 + ch, x0 : x0 + cw]), (size, size))[0])
        yield torch.from_numpy(np.concatenate(xs))


def _fit(student: Any, teacher: Any, batches: Iterator[Any], loss_fn: Any, steps: int, lr: float) -> tuple[float, float]:
    """Adam with a cosine schedule: the student's head outputs toward the teacher's; first and last loss."""
    import torch

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    first = last = float("nan")
    for i in _progress(range(steps), "distill"):
        x = next(batches)
        with torch.no_grad():
            target = teacher(x)
        out = student(x)
        target = list(target) if isinstance(target, (list, tuple)) else [target]
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = loss_fn(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        last = float(loss.detach())
        first = last if i == 0 else first
    return first, last


def _progress(items: Any, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="step", disable=None, leave=False)


def _write_back(graph: gs.Graph, module: Any) -> int:
    """Copy trained conv weights into the graph's Conv nodes (onnx2torch names modules after nodes)."""
    modules = dict(module.named_modules())
    names = Names(graph)
    count = 0
    for node in graph.nodes:
        if node.op != "Conv":
            continue
        mod = modules.get(node.name.lstrip("/").replace(".", "/"))
        if mod is None or not hasattr(mod, "weight"):
            continue
        weight = mod.weight.detach().numpy()
        old = constant_value(node.inputs[1])
        if weight.shape != old.shape:
            raise GraphoptError(f"distill: conv '{node.name}' changed shape {old.shape} → {weight.shape}")
        bias = mod.bias.detach().numpy() if mod.bias is not None else np.zeros(weight.shape[0], np.float32)
        _set(node, names, weight, bias.astype(np.float64), old.dtype)
        count += 1
    return count
