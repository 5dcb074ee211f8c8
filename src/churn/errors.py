"""User-facing errors: one line that names the file, key or URL and what was expected."""

from __future__ import annotations


class ChurnError(Exception):
    """A mistake in the user's input, parameters or environment; reported as one line, no traceback."""


class ParamError(ChurnError):
    """An invalid value in params.yaml."""

    def __init__(self, key: str, expected: str, got: object, source: str = "params.yaml") -> None:
        super().__init__(f"{source}: {key} must be {expected}, got {got!r}")
        self.key = key


class DataError(ChurnError):
    """An input table that does not match the declared schema."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
