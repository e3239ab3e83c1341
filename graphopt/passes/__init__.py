"""Built-in passes: one module each; importing a module registers its pass."""

from graphopt.passes import simplify  # noqa: F401
