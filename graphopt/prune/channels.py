"""Channel dependencies of an ONNX graph: which output channels of which convolutions must be pruned
together, and everything that must follow when they are.

Every output channel of a prunable Conv starts a *unit*. Channels travel through the graph:
activations, pooling, Resize and BatchNormalization pass them through; Concat (channel axis) lays
them side by side; Split/Slice on the channel axis take a range; elementwise ops with two feature
inputs (a residual Add, SiLU's Mul) couple their operands channel by channel (their units become
one, union-find); a depthwise Conv couples its output channel k with its input channel k. Anything
else that reads channels — Reshape/Transpose of a detection head, a graph output, a grouped Conv,
a MatMul — *protects* the units it reads: they are never removed. A *group* is a set of convs whose
units are coupled; pruning removes whole units, so every member conv loses the same channels and
every consumer (conv input channels, per-channel constants, BN parameters, Split sizes, Slice
bounds) follows. `apply` rewrites the graph in place for a set of removed units; `applied` does so
until its block ends (many candidates from one analysis).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.core.graph import Names, constant_value

PASS_THROUGH = {
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Clip",
    "Identity",
    "Dropout",
    "Softplus",
    "Mish",
    "Elu",
    "Selu",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Sqrt",
    "Cast",
    "Erf",
    "Gelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Resize",
    "Upsample",
    "Pad",
}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum"}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.unions = 0  # bumped by every merge: resolved roots cached against it stay valid until then

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
            self.unions += 1


@dataclass
class Group:
    """Convs whose output channels are coupled, and the units (root ids) they share."""

    convs: list[str]
    units: list[int]  # prunable unit roots, in the first member's channel order
    protected: int = 0  # units of the group that can never go (read by the head, an output, …)

    @property
    def size(self) -> int:
        return len(self.units) + self.protected


@dataclass
class ChannelGraph:
    """The analysis of one graph (see the module docstring)."""

    graph: gs.Graph
    uf: _UnionFind = field(default_factory=_UnionFind)
    units: dict[str, list[int]] = field(default_factory=dict)  # tensor name -> unit per channel
    producers: dict[str, list[int]] = field(default_factory=dict)  # conv name -> unit per output channel
    conv_output: dict[str, str] = field(default_factory=dict)  # conv name -> its output tensor
    depthwise: dict[str, list[int]] = field(default_factory=dict)  # depthwise conv -> unit per channel
    conv_inputs: dict[str, list[int]] = field(default_factory=dict)  # (non-depthwise) conv -> input units
    per_channel: list[tuple[gs.Node, int, list[int]]] = field(default_factory=list)  # node, input, units
    splits: list[tuple[gs.Node, list[list[int]]]] = field(default_factory=list)
    slices: list[tuple[gs.Node, list[int], int, int]] = field(default_factory=list)  # node, in units, a, b
    sized: list[tuple[gs.Node, list[int]]] = field(default_factory=list)  # Resize with `sizes` (N, C, H, W)
    protected_raw: set[int] = field(default_factory=set)
    reasons: dict[int, str] = field(default_factory=dict)

    # --- results -------------------------------------------------------------------------------

    def root(self, unit: int) -> int:
        return self.uf.find(unit)

    def protected(self) -> set[int]:
        return {self.root(u) for u in self.protected_raw}

    def groups(self) -> list[Group]:
        """Coupled convs with their prunable units (a group with none left is omitted)."""
        protected = self.protected()
        owner: dict[int, int] = {}
        parent = list(range(len(self.producers)))
        names = list(self.producers)

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, name in enumerate(names):
            for u in self.producers[name]:
                r = self.root(u)
                if r in owner:
                    a, b = find(owner[r]), find(i)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                else:
                    owner[r] = i
        members: dict[int, list[int]] = defaultdict(list)
        for i in range(len(names)):
            members[find(i)].append(i)
        groups = []
        for idx in members.values():
            convs = [names[i] for i in idx]
            seen: list[int] = []
            for name in convs:
                for u in self.producers[name]:
                    r = self.root(u)
                    if r not in seen:
                        seen.append(r)
            free = [r for r in seen if r not in protected]
            if free:
                groups.append(Group(convs, free, protected=len(seen) - len(free)))
        return groups

    def kept_counts(self, removed: set[int]) -> tuple[dict[str, int], dict[str, int]]:
        """Per conv: output channels kept, input channels kept (for MACs), given removed unit roots."""
        tables = self._resolved_roots()
        size = max(t.size for t in tables)
        kept = np.ones(size, dtype=bool)  # per root: not removed (one mask for the three tables)
        kept[[r for r in removed if r < size]] = False
        produced, depthwise, consumed = (t.kept(kept) for t in tables)
        out = produced | depthwise
        inp = consumed | {n: out[n] for n in self.depthwise}
        return out, inp

    def _resolved_roots(self) -> tuple[_RootTable, ...]:
        # The allocator asks for kept counts thousands of times on a finished analysis: resolve each
        # unit's root once (valid until the next union), as arrays, so that a count is two numpy passes.
        cached = self.__dict__.get("_roots")
        if cached is None or cached[0] != self.uf.unions:
            resolved = tuple(
                _RootTable.of({n: [self.root(u) for u in us] for n, us in table.items()})
                for table in (self.producers, self.depthwise, self.conv_inputs)
            )
            cached = self.__dict__["_roots"] = (self.uf.unions, resolved)
        return cached[1]


@dataclass(frozen=True)
class _RootTable:
    """Per conv its units' roots, flattened: `roots[k]` belongs to conv `names[owner[k]]`."""

    names: list[str]
    roots: np.ndarray
    owner: np.ndarray
    size: int  # one past the largest root

    @classmethod
    def of(cls, table: dict[str, list[int]]) -> _RootTable:
        names = list(table)
        roots = np.array([r for n in names for r in table[n]], dtype=np.intp)
        owner = np.repeat(np.arange(len(names), dtype=np.intp), [len(table[n]) for n in names])
        return cls(names, roots, owner, int(roots.max()) + 1 if roots.size else 0)

    def kept(self, kept_roots: np.ndarray) -> dict[str, int]:
        """Per conv, its units whose root `kept_roots` marks (a mask at least `size` long)."""
        counts = np.bincount(self.owner, weights=kept_roots[self.roots], minlength=len(self.names))
        return dict(zip(self.names, counts.astype(int).tolist(), strict=True))


def analyse(graph: gs.Graph) -> ChannelGraph:
    """Trace channel units through `graph` (topologically sorted)."""
    graph.toposort()
    cg = ChannelGraph(graph)
    outputs = {t.name for t in graph.outputs}

    def protect(units: list[int] | None, why: str) -> None:
        for u in units or []:
            cg.protected_raw.add(u)
            cg.reasons.setdefault(u, why)

    for node in graph.nodes:
        tracked = [cg.units.get(t.name) for t in node.inputs if t is not None and t.name]
        ins = [t for t in node.inputs]
        op = node.op
        if op == "Conv":
            _conv(cg, node, protect)
        elif op in PASS_THROUGH and ins and ins[0].name in cg.units and _keeps_channels(node):
            for out in node.outputs:
                cg.units[out.name] = cg.units[ins[0].name]
            if op == "Resize" and len(ins) > 3 and ins[3] is not None and ins[3].name:
                cg.sized.append((node, cg.units[ins[0].name]))  # its sizes name the channel count
        elif op == "BatchNormalization" and ins[0].name in cg.units:
            units = cg.units[ins[0].name]
            for i in range(1, 5):
                cg.per_channel.append((node, i, units))
            cg.units[node.outputs[0].name] = units
        elif op in ELEMENTWISE:
            _elementwise(cg, node, protect)
        elif op == "Concat" and _axis(node, 0) in (1, -3) and any(t is not None for t in tracked):
            if all(t.name in cg.units for t in ins):
                cg.units[node.outputs[0].name] = [u for t in ins for u in cg.units[t.name]]
            else:
                for t in ins:
                    protect(cg.units.get(t.name), f"Concat '{node.name}' with an untracked input")
        elif op == "Split" and ins[0].name in cg.units and _axis(node, 0) in (1, -3):
            _split(cg, node, protect)
        elif op == "Slice" and ins[0].name in cg.units:
            _slice(cg, node, protect)
        else:
            for t in ins:
                if t is not None and t.name in cg.units:
                    protect(cg.units[t.name], f"read by {op} '{node.name}'")
    for name in outputs:
        protect(cg.units.get(name), f"graph output '{name}'")
    return cg


def _axis(node: gs.Node, default: int) -> int:
    return int(node.attrs.get("axis", default))


def _keeps_channels(node: gs.Node) -> bool:
    """Resize/Upsample/Pad that leave the channel axis alone."""
    if node.op in ("Resize", "Upsample"):
        for i, t in enumerate(node.inputs[1:], 1):
            if t is None or not t.name or (node.op == "Resize" and i == 1):
                continue  # Resize's roi
            v = constant_value(t)
            if v is None or v.size != 4:
                return False  # computed scales/sizes: cannot tell or rewrite
            if v.dtype.kind == "f" and v.reshape(-1)[1] != 1:
                return False  # a channel scale
        return True
    if node.op == "Pad":
        pads = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
        return pads is not None and pads.size == 8 and pads.reshape(-1)[1] == 0 and pads.reshape(-1)[5] == 0
    return True


def _conv(cg: ChannelGraph, node: gs.Node, protect: object) -> None:
    x = node.inputs[0]
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    units_in = cg.units.get(x.name)
    groups = int(node.attrs.get("group", 1))
    out = node.outputs[0]
    if weight is None or weight.ndim != 4:
        protect(units_in, f"Conv '{node.name}' without constant 4-D weights")  # type: ignore[operator]
        return
    cout, cin_g = weight.shape[0], weight.shape[1]
    if groups > 1 and groups == cout and cin_g == 1 and units_in is not None and len(units_in) == cout:
        cg.depthwise[node.name] = units_in  # output channel k is input channel k
        cg.units[out.name] = units_in
        return
    if groups > 1:
        protect(units_in, f"grouped Conv '{node.name}'")  # type: ignore[operator]
        units = [cg.uf.new() for _ in range(cout)]
        protect(units, f"grouped Conv '{node.name}'")  # type: ignore[operator]
        cg.units[out.name] = units
        return
    if units_in is not None:
        cg.conv_inputs[node.name] = units_in
    units = [cg.uf.new() for _ in range(cout)]
    cg.producers[node.name] = units
    cg.conv_output[node.name] = out.name
    cg.units[out.name] = units


def _elementwise(cg: ChannelGraph, node: gs.Node, protect: object) -> None:
    feature = [t for t in node.inputs if t.name in cg.units]
    if not feature:
        return
    units = cg.units[feature[0].name]
    for t in feature[1:]:
        other = cg.units[t.name]
        if len(other) != len(units):
            protect(units + other, f"{node.op} '{node.name}' with mismatched channels")  # type: ignore[operator]
            return
        for a, b in zip(units, other, strict=True):
            cg.uf.union(a, b)
    for i, t in enumerate(node.inputs):
        if t.name in cg.units:
            continue
        value = constant_value(t)
        shape = value.shape if value is not None else (t.shape or None)
        if shape is None:
            protect(units, f"{node.op} '{node.name}' with an input of unknown shape")  # type: ignore[operator]
            return
        dims = list(shape)
        channel = dims[-3] if len(dims) >= 3 else 1
        if channel not in (1, "1") and value is not None and channel == len(units):
            cg.per_channel.append((node, i, units))
        elif channel not in (1, "1"):
            protect(units, f"{node.op} '{node.name}' with a per-channel operand it cannot slice")  # type: ignore[operator]
            return
    cg.units[node.outputs[0].name] = units


def _split(cg: ChannelGraph, node: gs.Node, protect: object) -> None:
    units = cg.units[node.inputs[0].name]
    sizes = None
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
        v = constant_value(node.inputs[1])
        sizes = None if v is None else [int(s) for s in v.reshape(-1)]
    elif "split" in node.attrs:
        sizes = [int(s) for s in node.attrs["split"]]
    else:
        n = len(node.outputs)
        if len(units) % n == 0:
            sizes = [len(units) // n] * n
    if sizes is None or sum(sizes) != len(units):
        protect(units, f"Split '{node.name}' with sizes it cannot read")  # type: ignore[operator]
        return
    parts, start = [], 0
    for out, size in zip(node.outputs, sizes, strict=True):
        cg.units[out.name] = units[start : start + size]
        parts.append(units[start : start + size])
        start += size
    cg.splits.append((node, parts))


def _slice(cg: ChannelGraph, node: gs.Node, protect: object) -> None:
    units = cg.units[node.inputs[0].name]
    values = [constant_value(t) if t is not None and t.name else None for t in node.inputs[1:5]]
    starts, ends = values[0], values[1]
    axes = values[2] if len(values) > 2 and values[2] is not None else None
    steps = values[3] if len(values) > 3 and values[3] is not None else None
    if starts is None or ends is None:
        protect(units, f"Slice '{node.name}' with computed bounds")  # type: ignore[operator]
        return
    axes = list(axes.reshape(-1)) if axes is not None else list(range(starts.size))
    if 1 not in axes and -3 not in axes:
        cg.units[node.outputs[0].name] = units  # slices H or W only
        return
    i = axes.index(1) if 1 in axes else axes.index(-3)
    if steps is not None and int(steps.reshape(-1)[i]) != 1:
        protect(units, f"Slice '{node.name}' with a channel step")  # type: ignore[operator]
        return
    n = len(units)
    a, b = int(starts.reshape(-1)[i]), int(ends.reshape(-1)[i])
    a = max(0, a + n if a < 0 else a)
    b = min(n, b + n if b < 0 else b)
    cg.units[node.outputs[0].name] = units[a:b]
    cg.slices.append((node, units, a, b))


# --- rewriting -----------------------------------------------------------------------------------


def apply(cg: ChannelGraph, removed: set[int]) -> dict[str, tuple[int, int]]:
    """Remove the units in `removed` (roots) from the graph, in place: producer filters and biases,
    consumer input channels, depthwise convs, per-channel constants and BN parameters, Split sizes,
    Slice bounds. Returns {conv: (output channels before, after)} for the convs that changed."""
    keep = lambda units: [i for i, u in enumerate(units) if cg.root(u) not in removed]  # noqa: E731
    changed: dict[str, tuple[int, int]] = {}
    nodes = {n.name: n for n in cg.graph.nodes}
    names = Names(cg.graph)

    def take(node: gs.Node, index: int, axis: int, rows: list[int]) -> None:
        tensor = node.inputs[index]
        value = constant_value(tensor)
        if value is None:
            raise ValueError(f"{node.name}: input {index} is not a constant")
        node.inputs[index] = gs.Constant(
            names(f"{tensor.name}.pruned"), np.ascontiguousarray(np.take(value, rows, axis=axis))
        )

    def cut_filters(name: str, units: list[int]) -> gs.Node | None:
        """A conv's output filters (weights and bias) to its kept units; None when all are kept."""
        rows = keep(units)
        if len(rows) == len(units):
            return None
        node = nodes[name]
        take(node, 1, 0, rows)
        if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
            take(node, 2, 0, rows)
        changed[name] = (len(units), len(rows))
        return node

    for name, units in cg.producers.items():
        cut_filters(name, units)
    for name, units in cg.conv_inputs.items():
        cols = keep(units)
        if len(cols) != len(units):
            take(nodes[name], 1, 1, cols)
    for name, units in cg.depthwise.items():
        node = cut_filters(name, units)
        if node is not None:
            node.attrs["group"] = changed[name][1]
    for node, index, units in cg.per_channel:
        rows = keep(units)
        if len(rows) == len(units):
            continue
        value = constant_value(node.inputs[index])
        axis = value.ndim - 3 if value.ndim >= 3 else 0
        take(node, index, axis, rows)
    for node, parts in cg.splits:
        sizes = [len(keep(p)) for p in parts]
        if sizes == [len(p) for p in parts]:
            continue
        if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
            node.inputs[1] = gs.Constant(names(f"{node.name}.split"), np.asarray(sizes, np.int64))
        else:
            node.attrs["split"] = sizes
    for node, units, a, b in cg.slices:
        kept_before = len(keep(units[:a]))
        kept_inside = len(keep(units[a:b]))
        values = [constant_value(t) for t in node.inputs[1:3]]
        axes_t = constant_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else None
        axes = list(axes_t.reshape(-1)) if axes_t is not None else list(range(values[0].size))
        i = axes.index(1) if 1 in axes else axes.index(-3)
        starts, ends = values[0].copy().reshape(-1), values[1].copy().reshape(-1)
        starts[i], ends[i] = kept_before, kept_before + kept_inside
        node.inputs[1] = gs.Constant(names(f"{node.name}.starts"), starts.astype(values[0].dtype))
        node.inputs[2] = gs.Constant(names(f"{node.name}.ends"), ends.astype(values[1].dtype))
    for node, units in cg.sized:
        sizes = constant_value(node.inputs[3]).copy().reshape(-1)
        sizes[1] = len(keep(units))
        node.inputs[3] = gs.Constant(names(f"{node.name}.sizes"), sizes.astype(np.int64))
    graph_io = {t.name for t in (*cg.graph.inputs, *cg.graph.outputs)}
    for tensor in cg.graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in graph_io:
            tensor.shape = None  # re-inferred by the pipeline
    return changed


@contextmanager
def applied(cg: ChannelGraph, removed: set[int]) -> Iterator[dict[str, tuple[int, int]]]:
    """`apply` for the duration of the block, then the graph as it was: `apply` only rebinds node inputs
    and attributes and clears shapes, which are restored here (its new constants are left unreferenced)."""
    nodes = [(n, list(n.inputs), dict(n.attrs)) for n in cg.graph.nodes]
    shapes = [(t, t.shape) for t in cg.graph.tensors().values() if isinstance(t, gs.Variable)]
    try:
        yield apply(cg, removed)
    finally:
        for node, inputs, attrs in nodes:
            for i, tensor in enumerate(inputs):
                if node.inputs[i] is not tensor:
                    node.inputs[i] = tensor
            if node.attrs != attrs:
                node.attrs.clear()
                node.attrs.update(attrs)
        for tensor, shape in shapes:
            tensor.shape = shape
