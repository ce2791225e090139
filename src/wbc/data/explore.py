"""What a person looks at before training: sample grids, grayscale histograms and thresholds.

Reproduces the reference analysis (its grayscale histograms showed background near 200, cells
near 180, the stained target cell below ~150, and a spike at 0 from the black fill left by
rotation) but derives the thresholds from the data with multi-Otsu instead of by eye.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.filters import threshold_multiotsu

from wbc._util.io import atomic_save, atomic_write_text
from wbc._util.progress import or_null
from wbc.data.scan import scan

BLACK = 10  # gray levels at or below this are rotation fill, not specimen


def thresholds_from_histogram(hist: np.ndarray) -> list[int]:
    """Three multi-Otsu thresholds (target cell | other cells | background) of a 256-bin histogram, fill excluded."""
    h = hist.astype(float).copy()
    h[: BLACK + 1] = 0  # fill pixels (also masked out before the histogram is made)
    return sorted(int(t) for t in threshold_multiotsu(hist=(h, np.arange(256)), classes=4))


def sample_histograms(recs, per_class: int, rng: random.Random, progress) -> tuple[dict, dict, dict]:
    """(sampled records, mean specimen histogram, black-fill fraction per image), each by class."""
    classes = sorted({r.label for r in recs})
    chosen = {c: rng.sample([r for r in recs if r.label == c], min(per_class, sum(r.label == c for r in recs))) for c in classes}
    hists, black = {}, {}
    task = progress.add_task("histograms", total=sum(len(v) for v in chosen.values()))
    for c, rows in chosen.items():
        hs, bf = [], []
        for r in rows:
            g = np.asarray(Image.open(r.path).convert("L"))
            fill = cv2.dilate((g <= BLACK).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
            hs.append(np.bincount(g[~fill], minlength=256) / max(1, (~fill).sum()))  # specimen only
            bf.append(float((g <= BLACK).mean()))
            progress.advance(task)
        hists[c], black[c] = np.mean(hs, 0), np.array(bf)
    return chosen, hists, black


def _figures(out: Path, split: str, chosen: dict, hists: dict, black: dict, thr: list[int], per_class_thr: dict, grid_cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(chosen)

    def save(fig, name):
        atomic_save(out / name, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
        plt.close(fig)

    for mode, name in (("RGB", "samples_color.png"), ("L", "samples_gray.png")):
        fig, axes = plt.subplots(len(classes), grid_cols, figsize=(grid_cols * 2.2, len(classes) * 1.8), squeeze=False)
        for i, c in enumerate(classes):
            for j, ax in enumerate(axes[i]):
                ax.axis("off")
                if j < len(chosen[c]):
                    ax.imshow(Image.open(chosen[c][j].path).convert(mode), cmap="gray" if mode == "L" else None)
            axes[i][0].set_title(c, loc="left", fontsize=9)
        fig.suptitle(f"Random {split} samples ({'colour' if mode == 'RGB' else 'grayscale'})")
        save(fig, name)

    fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 3), sharey=True, squeeze=False)
    for ax, c in zip(axes[0], classes):
        ax.bar(range(256), hists[c], width=1.0, color="gray")
        for t in per_class_thr[c]:
            ax.axvline(t, color="crimson", lw=1)
        ax.set_title(f"{c}\nthresholds {per_class_thr[c]}", fontsize=9)
        ax.set_xlabel("gray level")
    axes[0][0].set_ylabel("fraction of pixels")
    save(fig, "histograms_per_class.png")

    combined = np.mean([hists[c] for c in classes], 0)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(256), combined, color="black")
    for t, n in zip(thr, ["target cell", "cells", "background"]):
        ax.axvline(t, color="crimson", lw=1)
        ax.text(t, combined.max() * 0.9, f" {n} < {t}" if n != "background" else f" background > {t}", rotation=90, va="top", fontsize=8)
    ax.set_title("Combined average grayscale histogram of the specimen (black fill masked out)")
    ax.set_xlabel("gray level")
    save(fig, "histogram_combined.png")

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([black[c] * 100 for c in classes], bins=20, label=classes)
    ax.set_xlabel("black border (% of image)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title("Black fill left by rotation")
    save(fig, "black_border.png")


def _report(root, split: str, per_class: int, seed: int, n_bad: int, chosen: dict, black: dict, thr: list[int], per_class_thr: dict) -> str:
    md = [f"# Data exploration: {split} of `{root}`", "",
          f"{sum(len(v) for v in chosen.values())} images sampled ({per_class} a class at most), seed {seed}; {n_bad} bad files skipped.", "",
          "## Thresholds (multi-Otsu on the combined histogram, black fill excluded)", "",
          f"- target cell (stained WBC): gray level below **{thr[0]}**",
          f"- cells (red cells and the WBC): below **{thr[1]}**",
          f"- background (empty space between cells): above **{thr[2]}**", "",
          "| class | thresholds | black border, mean % | images with border |", "|---|---|---|---|"]
    for c in sorted(chosen):
        md.append(f"| {c} | {per_class_thr[c]} | {100 * black[c].mean():.1f} | {100 * (black[c] > 0.001).mean():.0f}% |")
    md += ["", "![colour samples](samples_color.png)", "", "![grayscale samples](samples_gray.png)", "",
           "![per-class histograms](histograms_per_class.png)", "", "![combined histogram](histogram_combined.png)", "",
           "![black border](black_border.png)", ""]
    return "\n".join(md)


def explore(data: str, out: Path, split: str = "TRAIN", per_class: int = 200, seed: int = 0, grid_cols: int = 6, progress=None) -> Path:
    """Sample a split, draw grids and histograms, derive the thresholds; report.md and explore.json in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = scan(data, progress=or_null(progress))
    chosen, hists, black = sample_histograms(s.split(split), per_class, random.Random(seed), or_null(progress))
    classes = sorted(chosen)
    thr = thresholds_from_histogram(np.mean([hists[c] for c in classes], 0))
    per_class_thr = {c: thresholds_from_histogram(hists[c]) for c in classes}
    _figures(out, split, chosen, hists, black, thr, per_class_thr, grid_cols)
    summary = {
        "data": str(s.root), "split": split, "images_per_class_sampled": {c: len(v) for c, v in chosen.items()},
        "thresholds_combined": {"target_cell_below": thr[0], "cells_below": thr[1], "background_above": thr[2]},
        "thresholds_per_class": per_class_thr,
        "black_border_fraction": {c: {"mean": float(v.mean()), "images_with_border": float((v > 0.001).mean())} for c, v in black.items()},
        "bad_files": len(s.bad),
    }
    atomic_write_text(out / "explore.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "report.md", _report(s.root, split, per_class, seed, len(s.bad), chosen, black, thr, per_class_thr))
    return out / "report.md"
