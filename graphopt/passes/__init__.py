"""Passes: the registry, typed options, the pipeline, recipes, and one module per built-in pass.

Importing this package registers the built-in passes; the registry itself imports none of them.
"""

from graphopt.passes import (  # noqa: F401  (importing a pass module registers it)
    drop_aux,
    fold_bn,
    fold_reparam,
    fuse_nms,
    prune,
    quantize,
    scatter_to_concat,
    simplify,
)
from graphopt.passes.registry import all_passes, get_pass

__all__ = ["all_passes", "get_pass"]
