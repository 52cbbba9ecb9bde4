"""Where a model runs and in what precision: the one place that resolves ``device="auto"`` and ``dtype="auto"`` for
scoring, evaluation, training and the command line.

``dtype="auto"`` means bfloat16 where the hardware computes it natively (CUDA GPUs, CPUs with AVX512-BF16 or AMX,
Arm CPUs with the BF16 extension) and float32 elsewhere: on CPUs with only AVX2 (AMD EPYC before Zen 4, most laptops)
bfloat16 is emulated and measured 25-40x slower than float32.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import torch

from .errors import OptionError

__all__ = ["DTYPES", "DTYPE_CHOICES", "cpu_has_native_bfloat16", "resolve_device", "resolve_dtype"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


@lru_cache(maxsize=1)
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86: AVX512-BF16 or AMX; Arm: the BF16 extension)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in checks if check is not None)
    if machine in ("aarch64", "arm64"):
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
                return any(line.startswith("Features") and " bf16" in line for line in cpuinfo)
        except OSError:  # not Linux: Apple's cores have BF16 from M2 on, but we cannot tell which this is
            return False
    return False


def _available_devices() -> str:
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(names)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device for `device`: ``"auto"`` or None (a GPU when there is one, else the CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, ``"mps"``... Under a multi-process launcher, ``"auto"`` and ``"cuda"`` take the GPU of
    the process's LOCAL_RANK. Raises `OptionError` for a device this machine does not have."""
    text = "auto" if device is None else str(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise OptionError("device", text, f"unknown device; accepted here: {_available_devices()}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device", text, f"no CUDA GPU is available here; accepted here: {_available_devices()}")
        count = torch.cuda.device_count()
        index = local_rank % count if resolved.index is None else resolved.index
        if index >= count:
            raise OptionError("device", text, f"this machine has {count} GPU(s); accepted here: {_available_devices()}")
        return torch.device("cuda", index)
    if resolved.type == "cpu":
        return resolved
    backend = getattr(torch.backends, resolved.type, None) or getattr(torch, resolved.type, None)
    if resolved.type == "meta" or not getattr(backend, "is_available", lambda: False)():
        raise OptionError("device", text, f"not available here; accepted here: {_available_devices()}")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None = "auto", device: str | torch.device | None = "auto") -> torch.dtype:
    """The compute precision for `dtype` on `device`: ``"float32"``, ``"bfloat16"`` (or those torch dtypes) as
    given; ``"auto"`` or None gives bfloat16 on CUDA and on CPUs with native bfloat16, float32 elsewhere (MPS
    included). Raises `OptionError` for anything else."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise OptionError("dtype", str(dtype), f"accepted: {', '.join(DTYPE_CHOICES)}")
        return dtype
    text = "auto" if dtype is None else dtype
    if text == "auto":
        kind = resolve_device(device).type
        native = kind == "cuda" or (kind == "cpu" and cpu_has_native_bfloat16())
        return torch.bfloat16 if native else torch.float32
    if text not in DTYPES:
        raise OptionError("dtype", text, f"accepted: {', '.join(DTYPE_CHOICES)}")
    return DTYPES[text]
