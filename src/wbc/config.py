"""Training settings: one dataclass passed down, written into every run folder."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wbc.io_utils import atomic_write_text


@dataclass
class TrainConfig:
    data: str = ""  # dataset root (Kaggle layout or <split>/<class>/)
    manifest: str = ""  # split manifest CSV; made (and saved in the run folder) when empty
    out: str = "runs/train"
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    input_size: tuple[int, int] = (192, 256)
    crop: int = 0  # 0: whole frame; >0: square of this side (320x240-frame px) centred on the stained cell
    head: tuple[int, ...] = (1024, 512, 128, 64)
    dropout: float = 0.3
    batch_size: int = 32
    # round 1: backbone frozen, head trained on cached features
    round1_epochs: int = 60
    round1_lr: float = 1e-3
    # round 2: last `train_stages` backbone stages + head, very low learning rate, augmentation
    round2_epochs: int = 8
    round2_lr: float = 1e-4
    train_stages: int = 3  # -1: whole backbone
    epoch_size: int = 0  # images per round-2 epoch (0: the whole train split)
    patience: int = 3  # epochs without validation improvement before stopping
    label_smoothing: float = 0.1
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    max_per_class: int = 0  # use at most this many train/val images a class (0: all); for quick runs
    seed: int = 0
    workers: int = field(default_factory=lambda: max(0, min(4, (os.cpu_count() or 2) - 1)))
    device: str = "auto"

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        d = json.loads(Path(path).read_text())
        d["input_size"], d["head"] = tuple(d["input_size"]), tuple(d["head"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
