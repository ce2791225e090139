"""Training settings: one dataclass passed down, written into every run folder."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wbc._util.io import atomic_write_text
from wbc.data.augment import Augment


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # sources, "NAME=DIR" (or one plain DIR)
    manifest: list[str] = field(default_factory=list)  # given split manifests, "NAME=FILE"; made in the run when absent
    out: str = "runs/train"
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    init: str = ""  # a wbc model file to start from (wbc.models.io.warm_start) instead of ImageNet weights
    size: int = 128  # model input, square
    field_um: float = 24.0  # the view: a square this many micrometres wide around the stained cell
    white_balance: bool = False  # the view's background made neutral, in training and in every later use of the model
    white_balance_image: bool = False  # first the whole image's background (more plasma than the view, where red cells crowd)
    stain_norm: bool = False  # the view's colours moved to one fixed L*a*b* world (Reinhard), likewise
    head: tuple[int, ...] = (1024, 512, 128, 64)
    dropout: float = 0.3
    batch_size: int = 32
    # round 1: backbone frozen, head trained on cached features
    round1_epochs: int = 60
    round1_lr: float = 1e-3
    # round 2: last `train_stages` backbone stages + head, very low learning rate, augmentation
    round2_epochs: int = 8
    round2_lr: float = 1e-4
    train_stages: int = -1  # -1: whole backbone
    layer_decay: float = 1.0  # round 2: each backbone block's rate this times the next one's, from the head down (1: one rate)
    bn: str = "train"  # round-2 batch-norm statistics: "train" (updated) or "frozen" (kept from ImageNet)
    epoch_size: int = 0  # images per round-2 epoch, drawn source- and class-balanced (0: as many as the train split)
    balance: str = "source"  # sampling: "source" (sources equal, classes equal within) or "pair" (every source's class equal)
    patience: int = 3  # epochs without validation improvement before stopping
    ema: float = 0.0  # round 2 validates and keeps a moving average of the weights, this decay a step (0: the weights as they are)
    sam: float = 0.0  # round 2: sharpness-aware steps (SAM), this neighbourhood radius rho (0: plain steps)
    label_smoothing: float = 0.1
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    max_per_class: int = 0  # at most this many train/val images per source and class (0: all); for quick runs
    review_accuracy: float = 0.98  # images left unflagged must be this accurate on validation
    augment: Augment = field(default_factory=Augment)
    seed: int = 0
    workers: int = field(default_factory=lambda: max(0, min(4, (os.cpu_count() or 2) - 1)))
    device: str = "auto"

    def check(self, resume: bool = False) -> None:
        """A clear error for an option out of its range, before any data or network is touched (the command line
        calls it before it imports PyTorch, so a typo costs a second, not the time to load it)."""
        from wbc.errors import WbcError

        if self.bn not in ("train", "frozen"):
            raise WbcError(f"--bn must be train or frozen, not '{self.bn}'")
        if self.round1_epochs == 0 and not self.init and not resume:
            raise WbcError("--round1-epochs 0 needs --init (a trained model whose head round 2 starts from)")
        if not 0 <= self.label_smoothing < 1:
            raise WbcError(f"--label-smoothing must be at least 0 and below 1, not {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise WbcError(f"--ema must be a decay at least 0 and below 1 (such as 0.998), not {self.ema}")
        if not 0 < self.layer_decay <= 1:
            raise WbcError(f"--layer-decay must be above 0 and at most 1 (such as 0.9; 1: off), not {self.layer_decay}")
        if not 0 <= self.sam <= 1:
            raise WbcError(f"--sam must be a radius from 0 to 1 (such as 0.05; 0: off), not {self.sam}")
        if not 0 <= self.augment.colour < 1:
            raise WbcError(f"--colour must be at least 0 and below 1, not {self.augment.colour}")
        if not 0 < self.augment.gamma[0] <= self.augment.gamma[1]:
            raise WbcError(f"--gamma must be LOW,HIGH with 0 < LOW <= HIGH, not {','.join(map(str, self.augment.gamma))}")
        if not 0 <= self.augment.cast < 1:
            raise WbcError(f"--cast must be at least 0 and below 1, not {self.augment.cast}")
        if not 0 <= self.augment.background <= 1:
            raise WbcError(f"--background must be a share from 0 to 1, not {self.augment.background}")
        if not 0 <= self.augment.tight <= 1:
            raise WbcError(f"--tight-crop must be a share from 0 to 1, not {self.augment.tight}")
        if not 0 <= self.augment.transfer <= 1:
            raise WbcError(f"--transfer must be a share from 0 to 1, not {self.augment.transfer}")
        self.check_sizes()
        if not resume:  # a resumed run reads its own
            self.check_paths()

    def check_sizes(self) -> None:
        """Counts, sizes and rates: a zero batch or input size failed deep in training, a negative epoch size or a
        validation share of 2 ran on as something else."""
        from wbc.data.split import check_val_fraction
        from wbc.errors import check_ranges

        check_val_fraction(self.val_fraction)
        check_ranges(("--batch-size", self.batch_size, self.batch_size >= 1, "at least 1"),
                     ("--size", self.size, self.size >= 32, "at least 32 (pixels)"),
                     ("--field-um", self.field_um, self.field_um > 0, "positive (micrometres)"),
                     ("--head", ",".join(map(str, self.head)), bool(self.head) and min(self.head) >= 1, "layer sizes of 1 or more"),
                     ("--dropout", self.dropout, 0 <= self.dropout < 1, "at least 0 and below 1"),
                     ("--round1-epochs", self.round1_epochs, self.round1_epochs >= 0, "at least 0"),
                     ("--round2-epochs", self.round2_epochs, self.round2_epochs >= 0, "at least 0"),
                     ("--round1-lr", self.round1_lr, self.round1_lr > 0, "positive"),
                     ("--round2-lr", self.round2_lr, self.round2_lr > 0, "positive"),
                     ("--train-stages", self.train_stages, self.train_stages >= -1, "-1 (all) or more"),
                     ("--epoch-size", self.epoch_size, self.epoch_size >= 0, "at least 0 (0: the train split's size)"),
                     ("--patience", self.patience, self.patience >= 1, "at least 1"),
                     ("--max-per-class", self.max_per_class, self.max_per_class >= 0, "at least 0 (0: all)"),
                     ("--review-accuracy", self.review_accuracy, 0 < self.review_accuracy <= 1, "above 0 and at most 1 (such as 0.98)"),
                     ("--workers", self.workers, self.workers >= 0, "at least 0"),
                     ("--balance", self.balance, self.balance in ("source", "pair"), "source or pair"),
                     ("--device", self.device, re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None, "auto, cpu, cuda, cuda:N or mps"))

    def check_paths(self) -> None:
        """Every data folder, manifest and --init file is there (names and folders only: minutes of scanning,
        grouping and framing come before the run would read them)."""
        from wbc.data.sources import parse_sources
        from wbc.models.files import require_file

        parse_sources(self.data, self.manifest)
        if self.init:
            require_file(self.init, "model", "--init takes a wbc model file: the shipped one or a run's model.safetensors")

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        d = json.loads(Path(path).read_text())
        d["head"] = tuple(d["head"])
        for k in ("data", "manifest"):
            if isinstance(d.get(k), str):  # wbc 0.1 runs: one dataset
                d[k] = [d[k]] if d[k] else []
        aug = d.pop("augment", {}) or {}
        if "gamma" in aug:
            aug["gamma"] = tuple(aug["gamma"])
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known, augment=Augment(**{k: v for k, v in aug.items() if k in Augment.__dataclass_fields__}))
