"""The five benchmarks by name: loader, MOS scale, split protocol, licence and citation notes."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from datasets import DatasetDict

from . import biq2021, kadid10k, koniq10k, live_challenge, spaq
from ._common import BenchmarkInfo

__all__ = ["DATASETS", "RegisteredBenchmark", "get_benchmark", "load_iqa_dataset"]


@dataclass(frozen=True)
class RegisteredBenchmark:
    """A benchmark's loader and what is known of it (``info.mos_min``/``mos_max``, ``info.citation``, ...)."""

    info: BenchmarkInfo
    loader: Callable[..., DatasetDict]

    @property
    def options(self) -> dict[str, object]:
        """The loader's keyword options (everything but ``data_dir``) and their defaults."""
        parameters = inspect.signature(self.loader).parameters.values()
        return {
            parameter.name: parameter.default for parameter in parameters if parameter.kind is parameter.KEYWORD_ONLY
        }

    @property
    def downloadable(self) -> bool:
        """Whether the loader can fetch the benchmark itself (``download=True``)."""
        return "download" in self.options

    def load(self, data_dir: str | os.PathLike[str] | None, **options: object) -> DatasetDict:
        """Call the loader, first checking that it takes every option given (a clear error for CLI users)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"{self.info.pretty_name} takes no option {', '.join(unknown)}; "
                f"its options are {', '.join(self.options)}."
            )
        return self.loader(data_dir, **options)


DATASETS: Mapping[str, RegisteredBenchmark] = MappingProxyType(
    {
        "biq2021": RegisteredBenchmark(biq2021.INFO, biq2021.load_biq2021),
        "koniq10k": RegisteredBenchmark(koniq10k.INFO, koniq10k.load_koniq10k),
        "live_challenge": RegisteredBenchmark(live_challenge.INFO, live_challenge.load_live_challenge),
        "spaq": RegisteredBenchmark(spaq.INFO, spaq.load_spaq),
        "kadid10k": RegisteredBenchmark(kadid10k.INFO, kadid10k.load_kadid10k),
    }
)


def _key(name: str) -> str:
    return "".join(character for character in name.casefold() if character.isalnum())


def get_benchmark(name: str) -> RegisteredBenchmark:
    """The registered benchmark ``name``; case, dashes and underscores are ignored (``KonIQ-10k`` works)."""
    for registered_name, benchmark in DATASETS.items():
        if _key(registered_name) == _key(name):
            return benchmark
    raise ValueError(f"Unknown IQA dataset {name!r}; choose one of {sorted(DATASETS)}.")


def load_iqa_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, **kwargs: object) -> DatasetDict:
    """Load benchmark ``name`` from ``data_dir``; ``kwargs`` go to its loader (``split_index``, ``seed``, ...)."""
    return get_benchmark(name).load(data_dir, **kwargs)
