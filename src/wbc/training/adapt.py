"""`wbc adapt`: fit a trained model to a new microscope from its own images.

Without labels (a folder of 50 or more of the lab's single-cell images):
1. Scale: the lab's pixels a micrometre, the median of the per-image red-cell estimates, becomes
   the model's fixed scale (no per-image estimate, so no per-image scale noise).
2. Batch-norm statistics: every BatchNorm layer's running mean and variance are reset and
   re-estimated on the lab's images (AdaBN, Li et al. 2016; one pass, cumulative average).
   Normalisation statistics are a main cause of collapse under domain shift for blood-cell
   classifiers (Tsutsui et al. 2023); re-estimating them needs no label. Only for a model whose
   statistics were updated while it was fine-tuned (`wbc train --bn train`): one fine-tuned with
   them frozen at ImageNet's (`--bn frozen`, the shipped model) learned weights that expect those
   statistics, and re-estimating them broke it (a Kaggle-only model on PBC cells: 59.6% -> 29.0%;
   `scripts/bn_effect.py`), so its statistics are kept (`bn_stats="auto"`).
With `--labelled DIR` (a handful of labelled cells a class, folder per class): the head and the
last backbone stages are then fine-tuned on them with augmentation, statistics kept fixed.
Whenever the backbone moved (statistics re-estimated or labelled fine-tuning), the open-set statistics follow
it (wbc.training.openset.refit_adapted): labelled classes' means from the lab's cells, near/far distances from
the lab's images at the shipped quantiles.
With `--heldout DIR` (labelled, never used to fit anything): figures before and after.
The adapted file records where it came from (original model, images, scale, steps) in its metadata.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from wbc._util.io import sha256
from wbc.data.augment import Augment
from wbc.data.collect import collect_images
from wbc.data.labels import match_classes
from wbc.data.transforms import CellDataset
from wbc.errors import WbcError
from wbc.image.scale import source_scale
from wbc.models.classifier import frozen_bn_eval, set_trainable
from wbc.models.colours import ColourCheck, with_lab
from wbc.models.io import load_model_file, save_model
from wbc.training.metrics import balanced
from wbc.training.openset import colour_table, refit_adapted

MIN_IMAGES = 20  # below this the statistics are noise; 50 or more is what we ask for

log = logging.getLogger(__name__)


@dataclass
class AdaptConfig:
    px_per_um: float = 0.0  # 0: measured from the lab's red cells
    labelled_epochs: int = 15
    labelled_lr: float = 1e-4
    labelled_stages: int = 2  # backbone stages fine-tuned on the labelled cells (besides the head)
    bn_stats: str = "auto"  # "target" (AdaBN), "keep", or "auto": target unless the model was fine-tuned with frozen statistics
    batch_size: int = 32
    seed: int = 0


def _images(folder: str, what: str) -> list[str]:
    c = collect_images([folder])
    if not c.files:
        raise WbcError(f"no images in {folder} ({what}): pass a folder of the lab's single-cell images")
    return c.files


def _labelled(folder: str, classes: list[str], what: str) -> tuple[list[str], list[int]]:
    """Images and class indices of a folder-per-class tree; class folders must be model classes."""
    try:
        lab = match_classes(folder, None, classes, ignore_unknown=False, check=False)
    except WbcError as e:
        raise WbcError(f"{what} {e}") from None
    return [str(p) for p in lab.paths], [int(k) for k in lab.y]


def _loader(paths, labels, px: float, spec, augment: Augment | None, batch_size: int, shuffle: bool = False) -> DataLoader:
    ds = CellDataset(paths, labels, [px] * len(paths), spec.input_size[0], spec.field_um, augment, spec.white_balance, spec.stain_norm,
                     spec.white_balance_image)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0)


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them from `batches` (uint8 images)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the whole pass
    model.eval()
    for m in bns:
        m.train()
    seen = 0
    for x, _ in batches:
        model(x.float().contiguous(memory_format=torch.channels_last))
        seen += len(x)
    for m in bns:
        m.momentum = 0.1
    model.eval()
    return seen


def bn_choice(asked: str, meta: dict) -> str:
    """"target" or "keep": re-estimate normalisation statistics only where the model's training updated them."""
    if asked not in ("auto", "target", "keep"):
        raise WbcError(f"--bn-stats must be auto, target or keep, not '{asked}'")
    if asked != "auto":
        return asked
    return "keep" if meta.get("info", {}).get("config", {}).get("bn") == "frozen" else "target"


def finetune(model: nn.Module, dl: DataLoader, cfg: AdaptConfig) -> list[float]:
    """A few epochs on the labelled cells: head + last stages, batch-norm statistics fixed."""
    set_trainable(model, cfg.labelled_stages)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.labelled_lr, weight_decay=1e-4)
    losses = []
    for _ in range(cfg.labelled_epochs):
        model.train()
        frozen_bn_eval(model, every=True)
        total = []
        for x, y in dl:
            loss = F.cross_entropy(model(x.float().contiguous(memory_format=torch.channels_last)), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total.append(loss.item())
        losses.append(float(np.mean(total)))
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    return losses


def figures(probs: np.ndarray, labels: list[int]) -> dict:
    """Accuracy over the model's full output and restricted to the classes the labels hold."""
    y, in_set = np.array(labels), sorted(set(labels))
    full = probs.argmax(1)
    restricted = np.array(in_set)[probs[:, in_set].argmax(1)]
    return {"images": len(y), "accuracy": float((full == y).mean()), "accuracy_in_set_classes": float((restricted == y).mean()),
            "balanced_accuracy": balanced(y, full)}


@torch.no_grad()
def heldout_figures(model: nn.Module, paths, labels, px: float, spec) -> dict:
    probs = torch.cat([model.probabilities(x.float()) for x, _ in _loader(paths, labels, px, spec, None, 64)]).numpy()
    return figures(probs, labels)


def adapt(model_path: str | Path, images: str, out: str | Path, cfg: AdaptConfig | None = None, labelled: str | None = None,
          heldout: str | None = None, progress=None) -> dict:
    """Write an adapted copy of `model_path` to `out`; return what was done and measured."""
    cfg = cfg or AdaptConfig()
    torch.manual_seed(cfg.seed)
    model_path, out = Path(model_path), Path(out)
    if model_path.suffix.lower() == ".onnx":
        raise WbcError(f"{model_path} is an ONNX model: adapt the native .safetensors model, then export it again")
    if out.suffix.lower() != ".safetensors":
        raise WbcError(f"--out must end in .safetensors, not '{out.name}'")
    model, meta = load_model_file(model_path)
    spec, stats = model.spec, bn_choice(cfg.bn_stats, meta)
    if not spec.field_um:
        raise WbcError(f"{model_path} frames cells by Kaggle-frame pixels (wbc 0.1); adapt needs a model trained with a physical view (wbc >= 0.2)")
    files = _images(images, "unlabelled images")
    if len(files) < MIN_IMAGES:
        raise WbcError(f"{images} holds {len(files)} images: adaptation needs at least {MIN_IMAGES} (50 or more is better)")
    if len(files) < 50:
        log.warning(f"only {len(files)} images: statistics from 50 or more are steadier")
    report: dict = {"from_model": model_path.name, "from_sha256": sha256(model_path),
                    "images_folder": str(images), "images": len(files), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    if cfg.px_per_um:
        px, report["scale"] = cfg.px_per_um, {"px_per_um": cfg.px_per_um, "given": True}
    else:
        s = source_scale(files, sample=200)
        if not s["px_per_um"]:
            raise WbcError(f"no red cells measurable in the images of {images}: pass --px-per-um (pixels a micrometre of your camera)")
        px, report["scale"] = s["px_per_um"], s
    log.info(f"lab scale: {px:.2f} px/um")

    held = _labelled(heldout, spec.classes, "--heldout") if heldout else None
    if held:
        before_px = spec.px_per_um or None
        report["heldout_before"] = heldout_figures(model, *held, before_px or px, spec) if before_px else _per_image_figures(model_path, held)

    model = model.to(memory_format=torch.channels_last)
    if stats == "target":
        geometry = Augment(hed_sigma=0, hed_bias=0, colour=0, hue=0, gamma=(1.0, 1.0), blur_p=0, noise_p=0, jpeg_p=0, grey_p=0, scale_jitter=0.05)
        n = reestimate_bn(model, _loader(files, [0] * len(files), px, spec, geometry, cfg.batch_size))
        report["batchnorm"] = {"statistics": "target", "re_estimated_on": n}
    else:
        report["batchnorm"] = {"statistics": "kept", "re_estimated_on": 0, "why": "model fine-tuned with frozen statistics" if cfg.bn_stats == "auto" else "asked"}
    if labelled:
        paths, labels = _labelled(labelled, spec.classes, "--labelled")
        losses = finetune(model, _loader(paths, labels, px, spec, Augment(), min(cfg.batch_size, len(paths)), shuffle=True), cfg)
        counts = {spec.classes[k]: labels.count(k) for k in sorted(set(labels))}
        report["labelled"] = {"folder": labelled, "images": len(paths), "per_class": counts, "epochs": cfg.labelled_epochs,
                              "stages": cfg.labelled_stages, "loss": losses}
    spec.px_per_um = float(px)
    if model.openset is not None and (labelled or stats == "target"):
        report["openset"] = _refit_openset(model, files, labelled, px)
    if spec.colours:
        report["colours"] = _add_lab_colours(spec, files, px, Path(images).name)
    if held:
        report["heldout_after"] = heldout_figures(model, *held, px, spec)
    info = dict(meta.get("info", {}))
    info["adapted"] = report
    save_model(model, out, info)
    return report


def _refit_openset(model: nn.Module, files: list[str], labelled: str | None, px: float) -> dict:
    """The distance statistics follow the moved backbone (wbc.training.openset.refit_adapted)."""
    spec = model.spec
    plain = _loader(files, [0] * len(files), px, spec, None, 64)
    lab = _loader(*_labelled(labelled, spec.classes, "--labelled"), px, spec, None, 64) if labelled else None
    r = refit_adapted(model, plain, lab)
    log.info(f"open-set statistics re-fitted: {r['class_means_refit'] or 'no class means'}; "
             f"near distance {r['before']['near_distance']:.2f} -> {spec.near_distance:.2f}")
    return r


def _add_lab_colours(spec, files: list[str], px: float, name: str) -> dict:
    """The lab's stain and light become one of the model's sources' (wbc.models.colours.with_lab): its runs are no
    longer judged "unlike the training labs" by their colours, the reason `wbc predict` sends a lab here."""
    views = colour_table(_loader(files, [0] * len(files), px, spec, None, 64))
    check = ColourCheck.from_spec(spec.colours)
    before = float(np.mean([check.distance(v) > check.limit for v in views]))
    spec.colours = with_lab(spec.colours, f"adapted:{name}", views)
    log.info(f"the lab's colours added to the model's sources ({before:.0%} of its {len(views)} images were unlike them)")
    return {"views": len(views), "beyond_limit_before": before, "sources": list(spec.colours["sources"])}


def _per_image_figures(model_path: Path, held) -> dict:
    """Held-out figures of the original model as a user would run it (scale measured per image)."""
    from wbc.infer.predictor import load_model

    return figures(load_model(model_path).predict_proba(held[0]).numpy(), held[1])
