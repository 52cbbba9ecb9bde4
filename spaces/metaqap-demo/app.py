"""MetaQAP image quality, a Gradio demo in the Hugging Face Spaces layout (this folder is the Space).

Drop one or more photos: each gets its quality score on the model's MOS scale with a rating in plain words, every
base model's score, how much the base models disagree (the ensemble's spread), what is most likely wrong with it
(the fault head's top faults, for a model that has one, as the bundled model), and a picture: the base models'
scores as bars beside the photo, with a coarse map of its weakest regions and the top faults under it. Runs offline
with the model bundled in `metaqap-hf`; set METAQAP_DEMO_MODEL to a checkpoint folder or hub id to show another one.

    python app.py                     # http://127.0.0.1:7860

Scoring goes through `metaqap_hf.scoring.ImageScorer`, the library behind `metaqap score`, so the page shows what
the command and `pipeline("image-quality")` give for the same file.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry: the demo must work offline

import gradio as gr  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from metaqap_hf.image_utils import load_image, pixel_values  # noqa: E402
from metaqap_hf.scoring import ImageScorer, ScoredImage  # noqa: E402

# ITU-T P.800's five absolute category ratings, over equal fifths of the MOS scale.
RATINGS = ("bad", "poor", "fair", "good", "excellent")
RATING_COLOURS = ("#c0392b", "#e67e22", "#d4ac0d", "#7cb342", "#2e7d32")
# The spread of the base scores, as a fraction of the MOS scale, under which the base models count as agreeing.
AGREEMENT = ((0.03, "the base models agree"), (0.08, "the base models disagree a little"))
MAP_GRID = 3  # the coarse map scores a MAP_GRID x MAP_GRID grid of regions
TOP_FAULTS = 3  # faults shown per photo (models with a fault head)
REGION_NAMES = {0: "top", 1: "middle", 2: "bottom"}, {0: "left", 1: "centre", 2: "right"}

# System fonts only: the page loads nothing from outside the server.
THEME = gr.themes.Soft(primary_hue="emerald", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])
CSS = """
.score-cards {display: flex; flex-wrap: wrap; gap: 12px;}
.score-card {flex: 1 1 220px; border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px 16px;
             background: var(--block-background-fill);}
.score-card .name {font-size: 0.85em; color: var(--body-text-color-subdued); overflow-wrap: anywhere;}
.score-card .score {font-size: 2.2em; font-weight: 700; line-height: 1.2;}
.score-card .scale {font-size: 0.45em; font-weight: 400; color: var(--body-text-color-subdued);}
.score-card .rating {display: inline-block; color: white; border-radius: 999px; padding: 1px 10px;
                     font-weight: 600; margin-right: 6px;}
.score-card .spread {font-size: 0.85em; margin-top: 6px;}
.score-card .faults {font-size: 0.85em; margin-top: 4px;}
.score-card.skipped {border-style: dashed;}
"""
# What `launch` needs beside the server options (Gradio 6 takes the look at launch).
LAUNCH_STYLE = {"theme": THEME, "css": CSS}


def rating(score: float, mos_range: tuple[float, float]) -> tuple[str, str]:
    """The plain-words rating of `score` and its colour."""
    low, high = mos_range
    band = min(max(int((score - low) / (high - low) * len(RATINGS)), 0), len(RATINGS) - 1)
    return RATINGS[band], RATING_COLOURS[band]


def agreement(std: float, mos_range: tuple[float, float]) -> str:
    fraction = std / (mos_range[1] - mos_range[0])
    return next((words for limit, words in AGREEMENT if fraction < limit),
                "the base models disagree: treat this score with caution")


def decimals(mos_range: tuple[float, float]) -> int:
    """Digits after the point that show about a thousandth of the scale (3 for 0-1, 1 for 0-100)."""
    return max(0, 3 - int(np.floor(np.log10(mos_range[1] - mos_range[0]))))


def score_photos(scorer: ImageScorer, files: list[str]) -> list[ScoredImage]:
    """The page's scores: `ImageScorer.score_files`, what `metaqap score` runs, so they are the command's."""
    return list(scorer.score_files([str(f) for f in files], batch_size=8))


def region_scores(scorer: ImageScorer, path: str) -> np.ndarray:
    """Scores of a MAP_GRID x MAP_GRID grid of regions of the photo, each scored alone (resized by the processor
    like a whole photo), as a (MAP_GRID, MAP_GRID) array."""
    image = load_image(path)
    rows = np.linspace(0, image.height, MAP_GRID + 1).astype(int)
    columns = np.linspace(0, image.width, MAP_GRID + 1).astype(int)
    regions = [image.crop((columns[c], rows[r], columns[c + 1], rows[r + 1]))
               for r in range(MAP_GRID) for c in range(MAP_GRID)]
    pixels = pixel_values(regions, scorer.processor).to(scorer.device)
    with torch.inference_mode():
        scores = scorer.model(pixel_values=pixels).score.float().cpu().numpy()
    return scores.reshape(MAP_GRID, MAP_GRID)


def figure(scorer: ImageScorer, item: ScoredImage, regions: np.ndarray | None) -> Image.Image:
    """The photo (with the coarse map of its regions) beside a bar chart of every base model's score and the
    ensemble's, with the rating bands behind the bars."""
    config = scorer.config
    low, high = config.mos_range
    digits = decimals((low, high))
    photo = load_image(item.path)
    photo.thumbnail((640, 640))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.2]}, dpi=100)
    left.imshow(photo)
    left.set_axis_off()
    if regions is not None:
        height, width = photo.height / MAP_GRID, photo.width / MAP_GRID
        spread = max(float(np.ptp(regions)), 1e-9)
        worst = np.unravel_index(np.argmin(regions), regions.shape)
        for (r, c), value in np.ndenumerate(regions):
            badness = (regions.max() - value) / spread  # 0 for the best region, 1 for the worst
            left.add_patch(Rectangle((c * width, r * height), width, height, color=plt.cm.Reds(badness),
                                     alpha=0.45 * badness, linewidth=0))
            left.text((c + 0.5) * width, (r + 0.5) * height, f"{value:.{digits}f}", ha="center",
                      va="center", fontsize=11, color="white", fontweight="bold" if (r, c) == worst else "normal",
                      bbox={"boxstyle": "round,pad=0.2", "facecolor": "black", "alpha": 0.45, "linewidth": 0})
        left.add_patch(Rectangle((worst[1] * width, worst[0] * height), width, height, fill=False,
                                 edgecolor="#c0392b", linewidth=3))
        left.set_title(f"{Path(item.path).name}: weakest region {REGION_NAMES[0][worst[0]]} "
                       f"{REGION_NAMES[1][worst[1]]}", fontsize=12)
    else:
        left.set_title(Path(item.path).name, fontsize=12)
    if item.faults:
        left.text(0.5, -0.03, f"Likely faults: {fault_words(item.faults)}", transform=left.transAxes, ha="center",
                  va="top", fontsize=11)

    names = [*item.base_scores, "MetaQAP ensemble"]
    values = [*item.base_scores.values(), item.score]
    for band, colour in enumerate(RATING_COLOURS):
        start = low + (high - low) * band / len(RATINGS)
        right.axvspan(start, start + (high - low) / len(RATINGS), color=colour, alpha=0.12, linewidth=0)
        right.text(start + (high - low) / len(RATINGS) / 2, len(names) - 0.35, RATINGS[band], ha="center",
                   va="bottom", fontsize=10, color=colour)
    colours = ["#90a4ae"] * len(item.base_scores) + [rating(item.score, (low, high))[1]]
    positions = np.arange(len(names))[::-1]
    right.barh(positions, values, color=colours, height=0.62)
    right.errorbar([item.score], [positions[-1]], xerr=[item.std], fmt="none", ecolor="black", capsize=5)
    ends = [*values[:-1], item.score + item.std]  # the ensemble's label goes past its error bar
    for position, end, value in zip(positions, ends, values):
        right.text(end + (high - low) * 0.015, position, f"{value:.{digits}f}", va="center",
                   fontsize=10, fontweight="bold" if position == positions[-1] else "normal")
    right.set_yticks(positions, names, fontsize=10)
    right.set_xlim(low, high)
    right.set_ylim(-0.6, len(names) - 0.1)
    right.set_xlabel(config.mos_name)
    right.set_title(f"Base models and ensemble (spread ±{item.std:.{digits}f})", fontsize=12)
    for side in ("top", "right"):
        right.spines[side].set_visible(False)
    fig.tight_layout()
    fig.canvas.draw()
    picture = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return picture


def stack(pictures: list[Image.Image], margin: int = 36) -> Image.Image | None:
    """The pictures one under another, on white, below a margin that the image's buttons can cover."""
    if not pictures:
        return None
    sheet = Image.new("RGB", (max(p.width for p in pictures), margin + sum(p.height for p in pictures)), "white")
    top = margin
    for picture in pictures:
        sheet.paste(picture, (0, top))
        top += picture.height
    return sheet


def fault_words(faults: list[dict]) -> str:
    """"motion blur 71% (blur), ..." for the most probable faults."""
    return ", ".join(f"{fault['label']} {fault['score']:.0%} ({fault['family']})" for fault in faults)


def score_card(item: ScoredImage, mos_range: tuple[float, float]) -> str:
    name = html.escape(Path(item.path).name)
    if not item.ok:
        return (f'<div class="score-card skipped"><div class="name">{name}</div>'
                f'<div class="spread">Could not be scored: {html.escape(item.reason)}</div></div>')
    words, colour = rating(item.score, mos_range)
    digits = decimals(mos_range)
    return (f'<div class="score-card"><div class="name">{name}</div>'
            f'<div class="score"><span class="score-value">{item.score:.{digits}f}</span>'
            f'<span class="scale"> / {mos_range[0]:g}-{mos_range[1]:g}</span></div>'
            f'<span class="rating" style="background:{colour}">{words}</span>'
            f'<div class="spread">Spread ±{item.std:.{digits}f}: {agreement(item.std, mos_range)}</div>'
            + (f'<div class="faults">Likely faults: {html.escape(fault_words(item.faults))}</div>'
               if item.faults else "") + '</div>')


def build_demo(model: str | os.PathLike | None = None) -> gr.Blocks:
    """The page, scoring with `model` (default: $METAQAP_DEMO_MODEL, else the bundled default model)."""
    # PyTorch in float32: the scores pipeline("image-quality") gives, and the fault head's output
    scorer = ImageScorer(model or os.environ.get("METAQAP_DEMO_MODEL") or None, dtype="float32", runtime="torch")
    config = scorer.config
    if config.fault_head is not None:  # known once the model is loaded: the scorer's option, set here
        scorer.top_k_faults = TOP_FAULTS
    mos_range = tuple(config.mos_range)
    columns = ["photo", "score", "rating", "spread", *config.backbone_ids,
               *(["likely faults"] if config.fault_head is not None else [])]

    def score(files: list[str] | None, show_map: bool):
        if not files:
            return "", None, gr.update(value=None, visible=False)
        cards, pictures, rows = [], [], []
        for item in score_photos(scorer, files):
            cards.append(score_card(item, mos_range))
            if not item.ok:
                continue
            regions = region_scores(scorer, item.path) if show_map else None
            pictures.append(figure(scorer, item, regions))
            rows.append([Path(item.path).name, round(item.score, 4), rating(item.score, mos_range)[0],
                         round(item.std, 4), *(round(item.base_scores[b], 4) for b in config.backbone_ids),
                         *([fault_words(item.faults)] if item.faults else [])])
        table = gr.update(value={"headers": columns, "data": rows}, visible=bool(rows))
        return f'<div class="score-cards">{"".join(cards)}</div>', stack(pictures), table

    low, high = mos_range
    with gr.Blocks(title="MetaQAP image quality") as demo:
        gr.Markdown(
            f"# MetaQAP image quality\n"
            f"Drop one or more photos to score their quality with **{Path(scorer.model_path).name}**: "
            f"{html.escape(config.mos_name)}, from {low:g} (worst) to {high:g} (best). Nothing leaves this machine."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(label="Photos", file_count="multiple", file_types=["image"], elem_id="photos")
                show_map = gr.Checkbox(value=True, label="Map the weakest regions",
                                       info=f"Scores a {MAP_GRID}x{MAP_GRID} grid of regions, each alone: "
                                            "compare regions with each other, not with the photo's score.")
                button = gr.Button("Score", variant="primary")
                gr.Markdown(
                    f"**Score**: the ensemble of {len(config.backbone_ids)} base models, combined by the "
                    f"checkpoint's meta-learner. **Rating**: the fifth of the scale it falls in "
                    f"({', '.join(RATINGS)}). **Spread**: how far the base models' scores are from each other; a "
                    "large spread means they see the photo differently, often because it is unlike their training "
                    "photos."
                )
            with gr.Column(scale=2):
                summary = gr.HTML(elem_id="summary")
                pictures = gr.Image(label="Base models and the weakest regions", show_label=False, type="pil",
                                    interactive=False, buttons=["download", "fullscreen"], elem_id="pictures")
                table = gr.Dataframe(label="Every score", interactive=False, visible=False, elem_id="table")
        outputs = [summary, pictures, table]
        files.upload(score, [files, show_map], outputs)
        button.click(score, [files, show_map], outputs)
        files.clear(lambda: ("", None, gr.update(value=None, visible=False)), None, outputs)
    return demo


if __name__ == "__main__":
    build_demo().launch(**LAUNCH_STYLE)
