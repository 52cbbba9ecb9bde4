"""Pseudo-MOS: full-reference scores, rank-normalised fusion and fusion weights fitted to human MOS."""

from __future__ import annotations

import pytest
import torch
from skimage import data

from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS, distort
from metaqap_hf.pretraining import DEFAULT_METRICS, FR_METRICS, PseudoMOSLabeler, full_reference_scores


def _photo_crops(size: int = 64) -> torch.Tensor:
    """Centre crops of three real photographs bundled with scikit-image."""
    crops = []
    for photo in (data.astronaut(), data.chelsea(), data.coffee()):
        image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
        top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
        crops.append(image[:, top : top + size, left : left + size])
    return torch.stack(crops)


def test_scores_are_oriented_higher_is_better_for_every_metric():
    reference = _photo_crops(size=96)
    mild = distort(reference, "white_noise", 1, generator=torch.Generator().manual_seed(0))
    severe = distort(reference, "white_noise", 5, generator=torch.Generator().manual_seed(0))
    mild_scores = full_reference_scores(reference, mild, metrics=tuple(FR_METRICS))
    severe_scores = full_reference_scores(reference, severe, metrics=tuple(FR_METRICS))
    for name in FR_METRICS:
        assert mild_scores[name].shape == (3,)
        assert (mild_scores[name] > severe_scores[name]).all(), name


def test_small_images_get_fewer_ms_ssim_scales_and_clear_errors_elsewhere():
    reference = _photo_crops(size=32)
    distorted = distort(reference, "gaussian_blur", 3)
    scores = full_reference_scores(reference, distorted, metrics=("multi_scale_ssim", "ssim"))
    assert torch.isfinite(scores["multi_scale_ssim"]).all()
    with pytest.raises(ValueError, match="vif_p needs images of at least 41x41"):
        full_reference_scores(reference, distorted, metrics=("vif_p",))
    with pytest.raises(ValueError, match="Unknown full-reference metrics"):
        full_reference_scores(reference, distorted, metrics=("psnr_hvs",))


def _calibration_scores() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """FR scores of every type x level on three photos, and the level of each row."""
    reference = _photo_crops()
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in DEFAULT_METRICS}
    levels = []
    for kind in DISTORTION_TYPES:
        for level in range(1, NUM_LEVELS + 1):
            distorted = distort(reference, kind, level, generator=torch.Generator().manual_seed(level))
            for name, values in full_reference_scores(reference, distorted).items():
                scores[name].append(values)
            levels.append(torch.full((reference.shape[0],), level))
    return {name: torch.cat(values) for name, values in scores.items()}, torch.cat(levels)


@pytest.fixture(scope="module")
def calibration():
    return _calibration_scores()


def test_rank_normalised_labels_lie_on_unit_interval_and_fall_with_level(calibration):
    scores, levels = calibration
    labeler = PseudoMOSLabeler.fit(scores)
    labels = labeler(scores)
    assert labels.dtype == torch.float32 and labels.shape == levels.shape
    assert labels.min() >= 0.0 and labels.max() <= 1.0
    percentiles = labeler.percentiles(scores)
    assert percentiles.min() >= 0.0 and percentiles.max() <= 1.0
    assert abs(percentiles.mean().item() - 0.5) < 0.02  # mid-ranks of the calibration set average 1/2
    mean_per_level = torch.stack([labels[levels == level].mean() for level in range(1, NUM_LEVELS + 1)])
    assert (mean_per_level[1:] < mean_per_level[:-1]).all(), mean_per_level.tolist()


def test_percentiles_saturate_outside_the_calibration_range():
    labeler = PseudoMOSLabeler.fit({"ssim": torch.linspace(0.2, 0.9, 50), "gmsd": -torch.linspace(0.01, 0.3, 50)})
    extreme = {"ssim": torch.tensor([0.0, 1.0]), "gmsd": torch.tensor([-1.0, 0.0])}
    assert labeler.percentiles(extreme).tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert labeler(extreme).tolist() == [0.0, 1.0]


def test_fit_to_human_recovers_a_known_combination():
    generator = torch.Generator().manual_seed(0)
    latent = torch.rand(400, generator=generator)
    # Four metrics: monotone but differently curved views of the latent quality, each with its own noise.
    scores = {
        "ssim": latent**2 + 0.05 * torch.rand(400, generator=generator),
        "gmsd": -torch.exp(-3 * latent) + 0.05 * torch.rand(400, generator=generator),
        "vif_p": torch.rand(400, generator=generator),
        "haarpsi": torch.sqrt(latent) + 0.05 * torch.rand(400, generator=generator),
    }
    labeler = PseudoMOSLabeler.fit(scores)
    percentiles = labeler.percentiles(scores).float()
    true_weights = torch.tensor([0.5, 0.3, 0.0, 0.2])
    mos = 1.0 + 4.0 * (0.05 + 0.9 * (percentiles @ true_weights))  # on KADID's 1-5 scale
    fitted = labeler.fit_to_human(scores, mos, mos_range=(1.0, 5.0))
    recovered = torch.tensor([fitted.weights[name] for name in labeler.metrics])
    assert torch.allclose(recovered, 0.9 * true_weights, atol=1e-4)
    assert fitted.intercept == pytest.approx(0.05, abs=1e-4)
    assert torch.allclose(fitted(scores), (mos - 1.0) / 4.0, atol=1e-4)
    assert all(weight >= 0 for weight in fitted.weights.values())


def test_json_round_trip_labels_identically(tmp_path, calibration):
    scores, _ = calibration
    labeler = PseudoMOSLabeler.fit(scores, max_points=101)
    assert all(values.numel() == 101 for values in labeler.sorted_values.values())
    tuned = labeler.fit_to_human(scores, labeler(scores) ** 2)
    restored = PseudoMOSLabeler.load(tuned.save(tmp_path / "labeler.json"))
    assert restored.metrics == tuned.metrics and restored.weights == tuned.weights
    assert torch.equal(restored(scores), tuned(scores))
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(ValueError, match="broken.json"):
        PseudoMOSLabeler.load(tmp_path / "broken.json")


def test_label_images_matches_scoring_then_labelling(calibration):
    scores, _ = calibration
    labeler = PseudoMOSLabeler.fit(scores)
    reference = _photo_crops()
    distorted = distort(reference, "jpeg", 4)
    assert torch.equal(labeler.label_images(reference, distorted), labeler(full_reference_scores(reference, distorted)))
