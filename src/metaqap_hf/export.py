"""ONNX export of a MetaQAP checkpoint, checked against PyTorch with onnxruntime. The library behind
`metaqap export onnx`; needs the `onnx` extra (`pip install 'metaqap-hf[onnx]'`: onnx, onnxscript, onnxruntime).

    >>> from metaqap_hf.export import export_onnx
    >>> report = export_onnx("path/to/checkpoint", "metaqap.onnx")
    >>> report.max_abs_diff                    # onnxruntime against PyTorch, per output
    {'score': 1.2e-07, 'base_scores': 3.6e-07, 'std': 1.2e-07}

What the ONNX model computes is `MetaQAPModel.forward` from processed pixels to scores; decoding and the image
processor's resize stay outside it. Its contract:

    input   pixel_values  float32 (batch, 3, H, W): RGB in [0, 1], resized whole to the processor's size (H x W,
                          512x512 for the bundled model, bicubic) and not normalised: what
                          `MetaQAPImageProcessor(...)(images, return_tensors="np")["pixel_values"]` returns
    outputs score         float32 (batch,): quality on the checkpoint's MOS scale, higher is better
            base_scores   float32 (batch, num_backbones): each base model's score, in `backbone_ids` order
            std           float32 (batch,): the spread of the base scores
            fault_probabilities  float32 (batch, num_fault_classes), only with `faults=True` (a checkpoint with a
                          fault head): each fault class's probability, in the order of the `metaqap.fault_labels`
                          and `metaqap.fault_families` metadata

The batch dimension is dynamic; H and W are fixed at export. The MOS scale, the backbone ids and this contract are
stored in the file's metadata (`metaqap.*` keys). The export traces the model with `torch.export` and writes one
self-contained file (weights inside) with the Resize operators' antialiasing, which needs opset 18 or later.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .image_processing_metaqap import MetaQAPImageProcessor
from .modeling_metaqap import MetaQAPModel

__all__ = ["FAULT_OUTPUT_NAME", "INPUT_NAME", "OUTPUT_NAMES", "OnnxExport", "OnnxParityError", "export_model",
           "export_onnx"]

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("score", "base_scores", "std")
FAULT_OUTPUT_NAME = "fault_probabilities"
MIN_OPSET = 18  # Resize with antialiasing
_REQUIRED_MODULES = ("onnx", "onnxscript", "onnxruntime")


class OnnxParityError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance; nothing was written."""


@dataclass
class OnnxExport:
    """What `export_onnx` wrote: the file, its opset, the input size, (when checked) the largest absolute
    difference between onnxruntime and PyTorch for each output, over the checked batch sizes, and the fault
    classes when it outputs their probabilities."""

    path: Path
    opset: int
    input_size: tuple[int, int]
    backbone_ids: list[str]
    max_abs_diff: dict[str, float] | None = None
    fault_labels: list[str] | None = None  # the classes of `fault_probabilities`, when exported


class _ForwardOutputs(nn.Module):
    """The model with plain tensor outputs, in `OUTPUT_NAMES` order (then the fault probabilities with `faults`),
    for the exporter."""

    def __init__(self, model: MetaQAPModel, faults: bool = False):
        super().__init__()
        self.model, self.faults = model, faults

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.faults:
            return self.model(pixel_values=pixel_values, return_dict=False)
        score, base_scores, std, fault_logits = self.model(pixel_values=pixel_values, return_dict=False,
                                                           output_faults=True)
        return score, base_scores, std, fault_logits.softmax(dim=-1)


def _require_onnx_extra() -> None:
    missing = [name for name in _REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'metaqap-hf[onnx]'")


def _check_export_options(output: str | os.PathLike, opset: int | None) -> Path:
    _require_onnx_extra()
    if opset is not None and opset < MIN_OPSET:
        raise ValueError(f"opset must be {MIN_OPSET} or later (antialiased Resize), got {opset}")
    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output.parent}: no such folder for the ONNX file")
    return output


def export_onnx(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    opset: int | None = None,
    verify: bool = True,
    verify_batch_sizes: tuple[int, ...] = (1, 3),
    tolerance: float = 1e-4,
    faults: bool = False,
) -> OnnxExport:
    """Export `checkpoint` (a folder written by `save_pretrained`, with its image processor, or a hub id) to the
    ONNX file `output`, with a dynamic batch dimension and the processor's input size.

    `opset` defaults to the exporter's own (at least 18). With `verify`, onnxruntime runs the file on random
    processed-size batches of `verify_batch_sizes` images (sizes other than the traced one exercise the dynamic
    batch) and every output must match PyTorch within `tolerance`, else `OnnxParityError` is raised and nothing is
    written. The file is written whole or not at all (a temporary file beside it is renamed into place).
    `faults` adds the output `fault_probabilities` (a checkpoint with a fault head; else a ValueError).
    """
    _check_export_options(output, opset)  # before the model loads
    model = MetaQAPModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    if faults and model.config.fault_head is None:
        raise ValueError(f"{checkpoint} has no fault head (config.fault_head is None): export it without faults")
    processor = MetaQAPImageProcessor.from_pretrained(checkpoint)
    return export_model(model, processor, output, source=str(checkpoint), opset=opset, verify=verify,
                        verify_batch_sizes=verify_batch_sizes, tolerance=tolerance, faults=faults)


def export_model(
    model: MetaQAPModel,
    processor: MetaQAPImageProcessor,
    output: str | os.PathLike,
    *,
    source: str | None = None,
    opset: int | None = None,
    verify: bool = True,
    verify_batch_sizes: tuple[int, ...] = (1, 3),
    tolerance: float = 1e-4,
    faults: bool = False,
) -> OnnxExport:
    """`export_onnx` of a float32 model already loaded on the CPU, with its image processor; `source` names where
    it came from in the file's metadata (default: the model's `name_or_path`)."""
    output = _check_export_options(output, opset)
    if faults and model.config.fault_head is None:
        raise ValueError(f"{source or 'this model'} has no fault head (config.fault_head is None): export it "
                         "without faults")
    wrapped = _ForwardOutputs(model, faults).eval()
    output_names = [*OUTPUT_NAMES, *([FAULT_OUTPUT_NAME] if faults else [])]
    size = (processor.size["height"], processor.size["width"])
    example = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    program = torch.onnx.export(
        wrapped, (example,), dynamo=True, opset_version=opset,
        input_names=[INPUT_NAME], output_names=output_names,
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}, verbose=False,
    )
    config = model.config
    program.model.metadata_props.update({
        "metaqap.input": f"{INPUT_NAME}: float32 (batch, 3, {size[0]}, {size[1]}), RGB in [0, 1], resized whole to "
                         f"{size[0]}x{size[1]} by MetaQAPImageProcessor, not normalised",
        "metaqap.outputs": "score (batch,) on mos_range, higher is better; base_scores (batch, num_backbones) in "
                           "backbone_ids order; std (batch,) the spread of the base scores",
        "metaqap.mos_range": json.dumps(config.mos_range),
        "metaqap.mos_name": config.mos_name,
        "metaqap.backbone_ids": json.dumps(config.backbone_ids),
        "metaqap.source": source if source is not None else str(getattr(model, "name_or_path", "")),
    })
    if faults:
        program.model.metadata_props.update({
            "metaqap.fault_labels": json.dumps(config.fault_head["labels"]),
            "metaqap.fault_families": json.dumps(config.fault_head["families"]),
        })
    opset_used = program.model.opset_imports[""]
    report = OnnxExport(output, opset_used, size, config.backbone_ids,
                        fault_labels=config.fault_head["labels"] if faults else None)
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        program.save(temporary, external_data=False)
        if verify:
            report.max_abs_diff = _max_abs_diff(wrapped, output_names, temporary, size, verify_batch_sizes)
            worst = max(report.max_abs_diff.values())
            if not worst <= tolerance:
                raise OnnxParityError(f"onnxruntime differs from PyTorch by up to {worst:.3g} (> {tolerance:g}): "
                                      f"{report.max_abs_diff}; {output} was not written")
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    return report


def _max_abs_diff(wrapped: _ForwardOutputs, output_names: list[str], path: Path, size: tuple[int, int],
                  batch_sizes: tuple[int, ...]) -> dict[str, float]:
    """The largest |onnxruntime - PyTorch| of each output over random batches of `batch_sizes` images."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    worst = dict.fromkeys(output_names, 0.0)
    for batch_size in batch_sizes:
        pixels = torch.rand(batch_size, 3, *size, generator=generator)
        with torch.inference_mode():
            expected = wrapped(pixels)
        outputs = session.run(output_names, {INPUT_NAME: pixels.numpy()})
        for name, got, reference in zip(output_names, outputs, expected):
            if got.shape != tuple(reference.shape):
                raise OnnxParityError(f"onnxruntime's {name} has shape {got.shape} for a batch of {batch_size}, "
                                      f"PyTorch's {tuple(reference.shape)}")
            worst[name] = max(worst[name], float(np.abs(got - reference.numpy()).max()))
    return worst
