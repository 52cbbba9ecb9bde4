"""ONNX Runtime as a scoring backend: a MetaQAP checkpoint exported once (`metaqap_hf.export.export_model`, the path
of `metaqap export onnx`), cached, and run by an `onnxruntime.InferenceSession` in place of the PyTorch model.

    >>> runtime_model = OnnxRuntimeModel.from_model(model, processor)   # exports on first use, then reuses the file
    >>> runtime_model(pixel_values=pixel_values).score                   # what model(pixel_values=...) gives

The cache: ``<cache_dir>/<key>.onnx``, by default under ``$HF_HOME/metaqap/onnx`` (``~/.cache/huggingface`` without
HF_HOME). The key hashes the weights and buffers, the config (MOS scale, meta-learner), the processor's input size,
this package's version, the export contract, and the torch and onnxruntime versions: a file made for other weights
or by another exporter is never picked up. A file enters the cache only after onnxruntime has matched PyTorch
within `tolerance` on it (the export's own check), so a file found there has passed it.

Where it runs: the CPU, in float32. ``runtime="auto"`` (`resolve_runtime`): ONNX Runtime on the CPU when it is
installed, float32 or ``"auto"`` is asked for, and this checkpoint's export is already in the cache (made by an
earlier ``runtime="onnx"``); PyTorch otherwise (GPUs, bfloat16 asked for, no export yet). The export takes a minute
or two for the default model on 2 cores: a run that did not ask for it never waits for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch
from transformers.utils import logging

from .devices import resolve_dtype
from .errors import OptionError
from .export import INPUT_NAME, OUTPUT_NAMES, export_model
from .modeling_metaqap import ImageQualityOutput, MetaQAPModel
from .version import __version__

__all__ = ["EXPORT_CONTRACT", "INSTALL_HINT", "RUNTIMES", "OnnxRuntimeModel", "allowed_cores", "onnx_cache_dir",
           "onnx_cache_key", "onnxruntime_available", "resolve_runtime"]

logger = logging.get_logger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
EXPORT_CONTRACT = 1  # raise when what the exported graph takes, computes or returns changes: old files are not reused
INSTALL_HINT = 'pip install "metaqap-hf[onnx]"'
_EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the export needs all three, the session onnxruntime
_OUTPUT_FIELDS = {field.name for field in dataclasses.fields(ImageQualityOutput)}


def onnxruntime_available() -> bool:
    """Whether the `onnx` extra (onnx, onnxscript, onnxruntime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in _EXPORT_MODULES)


def resolve_runtime(runtime: str = "auto", device: torch.device | str = "cpu",
                    dtype: str | torch.dtype | None = "auto") -> str:
    """Whether `runtime` on `device` with the asked-for `dtype` runs PyTorch (``"torch"``) or may run ONNX Runtime
    (``"onnx"``). ``"auto"`` gives ``"onnx"`` on the CPU when the `onnx` extra is installed and `dtype` is float32
    or ``"auto"``; its callers then use ONNX Runtime only where the checkpoint's export is already cached
    (`OnnxRuntimeModel.from_model(..., export=False)`), so no run pays for an export it did not ask for. Raises
    `OptionError` for an unknown runtime, and for ``"onnx"`` where it cannot run (a GPU, bfloat16, the extra
    missing: the message names it)."""
    if runtime not in RUNTIMES:
        raise OptionError("runtime", runtime, f"accepted: {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return runtime
    device = torch.device(device)
    asked_float32 = dtype in (None, "auto") or resolve_dtype(dtype, device) == torch.float32
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and asked_float32 and onnxruntime_available() else "torch"
    if device.type != "cpu":
        raise OptionError("runtime", runtime, f"runs on the CPU; on {device} use runtime torch (or auto)")
    if not asked_float32:
        raise OptionError("runtime", runtime, "computes in float32; use dtype float32 or auto, or runtime torch for "
                                              "bfloat16")
    if not onnxruntime_available():
        missing = [name for name in _EXPORT_MODULES if importlib.util.find_spec(name) is None]
        raise OptionError("runtime", runtime, f"needs {', '.join(missing)}, not installed: {INSTALL_HINT}")
    return runtime


def allowed_cores() -> int:
    """The CPU cores this process may run on (its affinity, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def onnx_cache_dir() -> Path:
    """``$HF_HOME/metaqap/onnx``, read when called (``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``
    without HF_HOME, as huggingface_hub does)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(hf_home).expanduser() / "metaqap" / "onnx"


def onnx_cache_key(model: MetaQAPModel, input_size: tuple[int, int]) -> str:
    """The cache key of `model`'s export at `input_size` (module docstring)."""
    import onnxruntime

    config = {key: value for key, value in model.config.to_dict().items()
              if not key.startswith("_") and key not in ("name_or_path", "transformers_version", "dtype")}
    identity = {"package": __version__, "contract": EXPORT_CONTRACT, "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__, "input_size": list(input_size), "config": config}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:24]


class OnnxRuntimeModel:
    """A MetaQAP model exported to ONNX and run by onnxruntime on the CPU, called as the PyTorch model is:
    ``runtime_model(pixel_values=...)`` returns an `ImageQualityOutput` (score, base_scores, std) of float32 CPU
    tensors. `config` is the PyTorch model's. Outputs are taken by name: an output the file adds beyond those
    `ImageQualityOutput` has is ignored. `threads`: onnxruntime's threads (default: the process's allowed cores)."""

    def __init__(self, path: str | os.PathLike, config, *, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or allowed_cores()
        options.inter_op_num_threads = 1  # one chain of convolutions: parallelism inside each operator
        self.path = Path(path)
        self.config = config
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.output_names = [output.name for output in self.session.get_outputs()]
        inputs = [node.name for node in self.session.get_inputs()]
        missing = [name for name in OUTPUT_NAMES if name not in self.output_names]
        if inputs != [INPUT_NAME] or missing:
            raise ValueError(f"{self.path}: not a MetaQAP export (inputs {inputs}, outputs {self.output_names}; "
                             f"expected {INPUT_NAME} -> {', '.join(OUTPUT_NAMES)})")

    @classmethod
    def from_model(cls, model: MetaQAPModel, processor, *, cache_dir: str | os.PathLike | None = None,
                   export: bool = True, tolerance: float = 1e-4, threads: int | None = None
                   ) -> OnnxRuntimeModel | None:
        """The runtime model of `model` (float32, on the CPU) and its image `processor`: the cached export when
        there is one; else, with `export`, a new export, kept only when onnxruntime matches PyTorch within
        `tolerance` (`metaqap_hf.export.OnnxParityError` otherwise); else None."""
        if next(model.parameters()).dtype != torch.float32 or next(model.parameters()).device.type != "cpu":
            raise ValueError("the ONNX export takes the float32 model on the CPU")
        input_size = (processor.size["height"], processor.size["width"])
        folder = Path(cache_dir).expanduser() if cache_dir is not None else onnx_cache_dir()
        path = folder / f"{onnx_cache_key(model, input_size)}.onnx"
        if not path.is_file():
            if not export:
                return None
            folder.mkdir(parents=True, exist_ok=True)
            logger.warning(f"exporting {model.name_or_path or 'the model'} to ONNX once, checked against PyTorch "
                           f"(a minute or two for the default model on 2 cores); later runs reuse {path}")
            # a name of this process's own, renamed into place: processes exporting at once never mix their files
            own = path.with_name(f"{path.stem}.{os.getpid()}.onnx")
            try:
                export_model(model, processor, own, tolerance=tolerance)
                os.replace(own, path)
            finally:
                own.unlink(missing_ok=True)
        return cls(path, model.config, threads=threads)

    def __call__(self, pixel_values: torch.Tensor) -> ImageQualityOutput:
        array = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = dict(zip(self.output_names, self.session.run(None, {INPUT_NAME: array})))
        return ImageQualityOutput(**{name: torch.from_numpy(value) for name, value in outputs.items()
                                     if name in _OUTPUT_FIELDS})
