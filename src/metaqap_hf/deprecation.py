"""Names that moved keep importing from their old place for one release, with a `DeprecationWarning` that says
where they live now (the README's change list names each)."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping

__all__ = ["REMOVED_IN", "moved_names"]

REMOVED_IN = "0.3.0"


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for `module` (its ``__name__``): `moved` maps each old name to its new home,
    ``"relative.module"`` (same name) or ``"relative.module:new_name"``, resolved relative to `module`'s package so
    the files also work when copied as remote code."""

    def __getattr__(name: str) -> object:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new_name = moved[name].partition(":")
        new_module = importlib.import_module(target, sys.modules[module].__package__)
        new_name = new_name or name
        warnings.warn(f"{module}.{name} moved to {new_module.__name__}.{new_name}; the old name goes away in "
                      f"{REMOVED_IN}", DeprecationWarning, stacklevel=2)
        return getattr(new_module, new_name)

    return __getattr__
