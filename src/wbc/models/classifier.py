"""Backbone + dense head, with the input scaling inside so the model takes plain RGB pixels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from wbc.models.openset import FeatureDistance
from wbc.models.weights import create_backbone

ALIASES = {"xception": "legacy_xception"}  # the reference design's name -> timm's


@dataclass
class ModelSpec:
    """Everything needed to rebuild the network and feed it; saved inside every model file."""

    backbone: str = "tf_efficientnet_lite0"
    classes: list[str] = field(default_factory=lambda: ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"])
    input_size: tuple[int, int] = (192, 256)  # (height, width): the whole 320x240 frame, scaled 0.8
    crop: int = 0  # legacy (field_um 0): a square this many 320x240-frame pixels wide centred on the stained cell
    field_um: float = 0.0  # >0: the view is a square this many micrometres wide centred on the stained cell
    px_per_um: float = 0.0  # >0: every image is taken to have this scale (an adapted lab's); 0: measured per image
    white_balance: bool = False  # the view's background made neutral before the model (wbc.image.framing.balanced)
    white_balance_image: bool = False  # first the whole image's, before the view is cut (wbc.image.framing.source_image)
    stain_norm: bool = False  # then its colours moved to one fixed L*a*b* world (wbc.image.stain.reinhard)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # of pixels scaled to 0..1
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    head: tuple[int, ...] = (1024, 512, 128, 64)  # the reference design's dense layers
    dropout: float = 0.3
    temperature: float = 1.0  # fitted on validation so probabilities are calibrated
    review_threshold: float = 0.7  # top probability below this -> flag for human review
    always_review: dict = field(default_factory=dict)  # class -> [right, answers]: those `review_threshold` left unflagged on
    # validation fell under 97% right, so every answer of the class is flagged (wbc.training.train.unvouched)
    openset: bool = False  # the file holds the training cells' feature statistics (wbc.models.openset)
    near_distance: float = 0.0  # >0: a cell farther than this from every known type is flagged for review
    far_distance: float = 0.0  # >0: a cell farther than this from every known type is UNIDENTIFIED
    colours: dict = field(default_factory=dict)  # the sources' view colours and their limit (wbc.models.colours); {}: none

    def always_reviewed_ids(self) -> list[int]:
        """The class indices of `always_review`, for masks over a batch's answers."""
        return [k for k, c in enumerate(self.classes) if c in self.always_review]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["head"] = list(self.head)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("input_size", "head", "mean", "std"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)


def make_head(in_features: int, sizes: tuple[int, ...], n_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    for size in sizes:
        layers += [nn.Linear(in_features, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = size
    layers.append(nn.Linear(in_features, n_classes))
    return nn.Sequential(*layers)



class CellClassifier(nn.Module):
    """forward(RGB float tensor in 0..255, N x 3 x H x W) -> logits (divide by spec.temperature)."""

    def __init__(self, spec: ModelSpec, pretrained: bool = True):
        super().__init__()
        self.spec = spec
        self.backbone = create_backbone(ALIASES.get(spec.backbone, spec.backbone), pretrained=pretrained)
        self.head = make_head(self.backbone.num_features, spec.head, len(spec.classes), spec.dropout)
        self.openset = FeatureDistance(self.backbone.num_features, len(spec.classes)) if spec.openset else None
        self.register_buffer("scale_mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("scale_std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone((pixels - self.scale_mean) / self.scale_std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(pixels) / self.spec.temperature, dim=1)

    def scores(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(probabilities N x C, distance to the nearest known type N, or None without statistics)."""
        feats = self.features(pixels)
        probs = torch.softmax(self.head(feats) / self.spec.temperature, dim=1)
        return probs, self.openset(feats).min(1).values if self.openset is not None else None

    def backbone_stages(self) -> list[nn.Module]:
        """Backbone pieces from input to output, for unfreezing the last N (timm EfficientNet/Xception)."""
        b = self.backbone
        if hasattr(b, "blocks"):  # EfficientNet family
            return [nn.ModuleList([b.conv_stem, b.bn1]), *b.blocks, nn.ModuleList([b.conv_head, b.bn2])]
        return [b]  # unknown layout: all or nothing


def set_trainable(model: CellClassifier, stages: int) -> None:
    """Train the head plus the last `stages` backbone stages (-1: the whole backbone, 0: none)."""
    parts = model.backbone_stages()
    chosen = parts if stages < 0 else parts[len(parts) - stages :] if stages else []
    for p in model.backbone.parameters():
        p.requires_grad = False
    for part in chosen:
        for p in part.parameters():
            p.requires_grad = True
    for p in model.head.parameters():
        p.requires_grad = True


def frozen_bn_eval(model: CellClassifier, every: bool = False) -> None:
    """Keep batch-norm statistics of frozen parts (`every`: of all parts) fixed; call after model.train()."""
    for m in model.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (every or not any(p.requires_grad for p in m.parameters())):
            m.eval()
