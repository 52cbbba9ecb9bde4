"""The package's error for a bad option value, at the ground floor so every room (devices, scoring, the command line)
raises the same type."""

from __future__ import annotations

__all__ = ["OptionError"]


class OptionError(ValueError):
    """A bad value for an option. `option` is its keyword name in this package (``"batch_size"``, ``"device"``,
    ``"output"``, ...), `value` what was given and `problem` what is wrong and what is accepted; raised before any
    work starts."""

    def __init__(self, option: str, value: object, problem: str):
        super().__init__(f"{option}={value!r}: {problem}")
        self.option = option
        self.value = value
        self.problem = problem
