"""Write a small YOLO-shaped ONNX model with random weights, for the demo and tests (no torch needed).

It has what real exports carry and the passes remove: Conv → BatchNormalization → SiLU (as
Sigmoid·Mul), a shape-computing Reshape chain (Shape/Gather/Unsqueeze/Concat), constant
sub-expressions and an Identity, ending in an anchor-free-style output [1, 4 + nc, N].

    python tools/make_demo_model.py demo.onnx [--imgsz 64] [--classes 3] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Small helper to write ONNX graphs by hand (used by the demo and by tests)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, value: np.ndarray, base: str = "c") -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int = 3,
        stride: int = 1,
        group: int = 1,
        bias: bool = False,
        pad: int | None = None,
    ) -> str:
        w = (self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(
            np.float32
        )
        inputs = [x, self.const(w, "w")]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "b"))
        p = k // 2 if pad is None else pad
        return self.node(
            "Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4, group=group
        )

    def bn(self, x: str, c: int) -> str:
        stats = [
            self.rng.uniform(0.5, 1.5, c),
            self.rng.normal(0, 0.1, c),
            self.rng.normal(0, 0.1, c),
            self.rng.uniform(0.5, 1.5, c),
        ]
        names = [
            self.const(v.astype(np.float32), n)
            for v, n in zip(stats, ("scale", "shift", "mean", "var"), strict=True)
        ]
        return self.node("BatchNormalization", [x, *names], epsilon=1e-3)

    def silu(self, x: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def conv_bn_silu(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> str:
        return self.silu(self.bn(self.conv(x, cin, cout, k, stride), cout))

    def model(
        self, inputs: list[tuple[str, list[int]]], outputs: list[str], opset: int = OPSET
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "graph",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.output}
        for out in model.graph.output:  # fill output shapes (the checker wants them)
            if out.name in inferred and inferred[out.name].type.tensor_type.HasField("shape"):
                out.CopyFrom(inferred[out.name])
        return model


def build_demo_model(imgsz: int = 64, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    x = b.conv_bn_silu("images", 3, 8, k=3, stride=2)
    x = b.conv_bn_silu(x, 8, 16, k=3, stride=2)
    x = b.node("Identity", [x])
    x = b.conv_bn_silu(x, 16, 16, k=1)
    head = b.node(
        "Conv",
        [
            x,
            b.const((b.rng.standard_normal((4 + classes, 16, 1, 1)) * 0.25).astype(np.float32), "w_head"),
            b.const(np.zeros(4 + classes, np.float32), "b_head"),
        ],
        kernel_shape=[1, 1],
    )
    # Reshape target computed from the tensor's own shape, as torch exporters emit it: [batch, 4 + nc, -1].
    shape = b.node("Shape", [head])
    batch = b.node("Gather", [shape, b.const(np.array(0, np.int64), "idx")], axis=0)
    channels = b.node("Gather", [shape, b.const(np.array(1, np.int64), "idx")], axis=0)
    batch_u = b.node("Unsqueeze", [batch, b.const(np.array([0], np.int64), "axes")])
    channels_u = b.node("Unsqueeze", [channels, b.const(np.array([0], np.int64), "axes")])
    target = b.node("Concat", [batch_u, channels_u, b.const(np.array([-1], np.int64), "minus_one")], axis=0)
    flat = b.node("Reshape", [head, target])
    # A constant sub-expression (2 * 0.5) that folding turns into one value.
    one = b.node(
        "Mul", [b.const(np.array(2.0, np.float32), "two"), b.const(np.array(0.5, np.float32), "half")]
    )
    flat = b.node("Mul", [flat, one])
    boxes = b.node(
        "Slice",
        [
            flat,
            b.const(np.array([0], np.int64)),
            b.const(np.array([4], np.int64)),
            b.const(np.array([1], np.int64)),
        ],
    )
    scores = b.node(
        "Sigmoid",
        [
            b.node(
                "Slice",
                [
                    flat,
                    b.const(np.array([4], np.int64)),
                    b.const(np.array([4 + classes], np.int64)),
                    b.const(np.array([1], np.int64)),
                ],
            )
        ],
    )
    b.nodes.append(helper.make_node("Concat", [boxes, scores], ["output0"], name="output_concat", axis=1))
    n = (imgsz // 4) ** 2
    graph = helper.make_graph(
        b.nodes,
        "graphopt_demo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, n])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="graphopt-demo"
    )
    model.ir_version = 8
    names = {str(i): f"class{i}" for i in range(classes)}
    for key, value in (
        ("graphopt.names", names),
        ("graphopt.imgsz", [imgsz, imgsz]),
        ("graphopt.head", "anchor-free"),
    ):
        model.metadata_props.add(
            key=key, value=value if isinstance(value, str) else __import__("json").dumps(value)
        )
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    onnx.save_model(build_demo_model(args.imgsz, args.classes, args.seed), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
