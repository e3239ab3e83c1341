"""Structured channel pruning's machinery: channel-dependency groups and their edit, importance
and allocation, recovery. The `prune` pass (graphopt.passes.prune) drives it."""
