"""Built-in passes: one module each; importing a module registers its pass."""

from graphopt.passes import drop_aux, fold_bn, fold_reparam, fuse_nms, prune, quantize, simplify  # noqa: F401
