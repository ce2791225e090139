"""The augmentation settings: a plain dataclass, so a training config (and the CLI that shows its
defaults) is read without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Augment:
    """Strengths of every augmentation (0 turns one off); saved with the run's config."""

    rotate: bool = True
    shift_um: float = 1.5
    scale_jitter: float = 0.15
    hed_sigma: float = 0.08  # stain concentration scaling, per H, E and D channel
    hed_bias: float = 0.015
    colour: float = 0.15  # brightness, contrast, saturation
    hue: float = 0.04
    gamma: tuple[float, float] = (0.75, 1.35)
    blur_p: float = 0.3
    noise_p: float = 0.3
    jpeg_p: float = 0.3
    grey_p: float = 0.05
    cast: float = 0.0  # colour cast: each channel's gain drawn from 1 +- cast (another lamp, filter or white balance)
    background: float = 0.0  # probability of a new background tone (greyer, darker or tinted) under an unchanged cell
    tight: float = 0.0  # probability that a view is cut tight around the cell, black outside (an analyser's crop)
    transfer: float = 0.0  # probability that the whole image is moved into another lab's light and stain (`lab_transfer`)
