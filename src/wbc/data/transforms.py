"""Training datasets and the augmentations that match how the Kaggle copies vary."""

from __future__ import annotations

from torch.utils.data import Dataset
from torchvision.transforms import v2

from wbc.data.framing import load_input


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

    def __init__(self, paths: list, labels: list[int], size_hw: tuple[int, int], augment: bool = False, crop: int = 0):
        self.paths, self.labels, self.size_hw, self.crop = list(paths), list(labels), tuple(size_hw), crop
        self.transform = train_augment() if augment else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_input(self.paths[i], self.size_hw, self.crop)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]
