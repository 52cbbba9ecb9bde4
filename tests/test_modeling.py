import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from metaqap_hf import MetaQAPConfig, MetaQAPImageProcessor, MetaQAPModel


def _pixels(seed=0, batch=3, size=80):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_scale_and_spread(tiny_checkpoint):
    model = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    with torch.no_grad():
        out = model(_pixels())
    assert out.score.shape == (3,) and out.base_scores.shape == (3, 2) and out.std.shape == (3,)
    # the final score is the meta-learner's linear combination, on the 1-5 scale
    unit = model.to_unit_scale(out.base_scores)
    expected = model.from_unit_scale(unit @ torch.tensor([0.7, 0.4]) - 0.05)
    torch.testing.assert_close(out.score, expected)
    torch.testing.assert_close(out.std, out.base_scores.std(dim=1, correction=0))
    assert out.loss is None


def test_each_backbone_sees_its_own_resolution_and_normalisation(tiny_config):
    model = MetaQAPModel(tiny_config).eval()
    seen = []
    for backbone in model.backbones:
        backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    image = torch.full((1, 3, 50, 70), 0.75)
    with torch.no_grad():
        model(image)
    assert seen[0].shape[-2:] == (64, 64) and seen[1].shape[-2:] == (96, 96)
    imagenet = (0.75 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen[0][0, :, 10, 10], imagenet)
    torch.testing.assert_close(seen[1][0, :, 10, 10], torch.full((3,), 0.5))


def test_save_and_load_round_trip_is_exact_and_safetensors_only(tiny_checkpoint, tmp_path):
    files = sorted(p.name for p in tiny_checkpoint.iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    model = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    model.save_pretrained(tmp_path / "again")
    again = MetaQAPModel.from_pretrained(tmp_path / "again").eval()
    x = _pixels(1)
    with torch.no_grad():
        torch.testing.assert_close(model(x).base_scores, again(x).base_scores, rtol=0, atol=0)


def test_auto_classes_load_the_checkpoint(tiny_checkpoint):
    config = AutoConfig.from_pretrained(tiny_checkpoint)
    model = AutoModel.from_pretrained(tiny_checkpoint).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_checkpoint)
    assert isinstance(config, MetaQAPConfig) and isinstance(model, MetaQAPModel)
    assert isinstance(processor, MetaQAPImageProcessor)
    direct = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    x = _pixels(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x).score, direct(x).score, rtol=0, atol=0)


def test_loading_does_not_reinitialise_backbone_weights(tiny_checkpoint):
    saved = MetaQAPModel.from_pretrained(tiny_checkpoint).state_dict()
    from safetensors.torch import load_file

    on_disk = load_file(tiny_checkpoint / "model.safetensors")
    for key, value in on_disk.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=f"{key} changed on load")
    # the meta-learner shows in the config exactly what its weights hold
    config = MetaQAPConfig.from_pretrained(tiny_checkpoint)
    assert config.meta_learner["coefficients"] == pytest.approx([0.7, 0.4])
    assert config.meta_learner["intercept"] == pytest.approx(-0.05)


def test_non_persistent_buffers_survive_reload(tmp_path):
    # test_maxvit has relative-position buffers that timm does not save; loading builds on the meta device
    config = MetaQAPConfig(backbones=[{"name": "test_maxvit", "image_size": 160}])
    torch.manual_seed(0)
    model = MetaQAPModel(config).eval()
    model.save_pretrained(tmp_path)
    loaded = MetaQAPModel.from_pretrained(tmp_path).eval()
    fresh_buffers = dict(model.named_buffers())
    persistent = set(model.state_dict())
    non_persistent = [name for name in fresh_buffers if name not in persistent]
    assert non_persistent, "test_maxvit should have non-persistent buffers"
    loaded_buffers = dict(loaded.named_buffers())
    for name in non_persistent:
        torch.testing.assert_close(loaded_buffers[name], fresh_buffers[name], rtol=0, atol=0, msg=name)
    x = _pixels(3, batch=2, size=160)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).score, model(x).score)


def test_gradients_reach_every_backbone_and_head(tiny_config):
    torch.manual_seed(0)
    model = MetaQAPModel(tiny_config).train()
    out = model(_pixels(4, batch=4), labels=torch.tensor([1.5, 2.5, 3.5, 4.5]))
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"backbones", "heads"}
    for prefix in ("backbones.0.", "backbones.1.", "heads.0.", "heads.1."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert sum(g.abs().sum() for g in grads) > 0, f"no gradient reaches {prefix}"


def test_bfloat16_matches_float32_closely(tiny_checkpoint):
    model = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    x = _pixels(5)
    with torch.no_grad():
        full = model(x).score
        half = model.to(torch.bfloat16)(x).score
    assert half.dtype == torch.float32  # scores are always returned in float32
    torch.testing.assert_close(half, full, atol=0.05, rtol=0)


def test_the_meta_learner_lives_in_the_config(tiny_checkpoint, tmp_path):
    """Editing config.json's meta-learner changes the scores; the weights hold no copy of it."""
    import json

    from safetensors.torch import load_file

    assert not any(key.startswith("meta_learner") for key in load_file(tiny_checkpoint / "model.safetensors"))
    x = _pixels(5)
    model = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["meta_learner"] = {"method": "mean", "coefficients": [1.0, 0.0], "intercept": 0.0}
    (tiny_checkpoint / "config.json").write_text(json.dumps(config))
    edited = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    with torch.no_grad():
        output, edited_output = model(x), edited(x)
    torch.testing.assert_close(edited_output.score, output.base_scores[:, 0])
    assert not torch.allclose(edited_output.score, output.score)
