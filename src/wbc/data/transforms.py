"""Image loading and the augmentations that match how the Kaggle copies vary."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from wbc.errors import WbcError


def to_tensor(im: Image.Image, size_hw: tuple[int, int]) -> torch.Tensor:
    """A PIL image as a uint8 3xHxW tensor of the model's input size (the whole frame, resized)."""
    im = im.convert("RGB").resize((size_hw[1], size_hw[0]), Image.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


def load_rgb(path, size_hw: tuple[int, int]) -> torch.Tensor:
    """Decode an image file straight to the model's input tensor; a bad file is a WbcError."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size_hw[1], size_hw[0]))  # JPEG: decode at reduced scale when it can
            return to_tensor(im, size_hw)
    except FileNotFoundError:
        raise WbcError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise WbcError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__} (check the file)") from None


def train_augment() -> v2.Compose:
    """Flips and rotations like the dataset's own, small shifts/zoom, and stain/illumination jitter."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(degrees=20, translate=(0.06, 0.06), scale=(0.9, 1.1), shear=5, fill=0),
            v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15, hue=0.03),
        ]
    )


class ImageDataset(Dataset):
    """(uint8 image tensor, class index) pairs from paths and labels."""

    def __init__(self, paths: list, labels: list[int], size_hw: tuple[int, int], augment: bool = False):
        self.paths, self.labels, self.size_hw = list(paths), list(labels), tuple(size_hw)
        self.transform = train_augment() if augment else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_rgb(self.paths[i], self.size_hw)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]
