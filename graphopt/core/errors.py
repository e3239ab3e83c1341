"""Errors the CLI turns into one line and an exit code (tracebacks only with --debug)."""


class GraphoptError(Exception):
    """A user mistake or an unusable input: printed as `error: …`, exit 2."""

    exit_code = 2


class VerificationError(GraphoptError):
    """A pass registered as lossless changed the model's outputs; nothing is written. Exit 1."""

    exit_code = 1
