"""Two-round transfer learning: head on frozen features, then fine-tuning at a very low rate.

Read top to bottom: prepare data (one split per source, wbc.data.sources) -> round 1 (cached
features) -> round 2 (augmented images, backbone unfrozen, source- and class-balanced sampling)
-> calibrate on validation -> save. A checkpoint is written atomically after every epoch;
`resume=True` continues a killed run from it. Model selection reads only validation: the mean
over sources of each source's balanced accuracy, so no source or class outweighs the others.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, WeightedRandomSampler

from wbc._util.device import pick_device
from wbc._util.io import atomic_save, atomic_write_text
from wbc._util.progress import or_null
from wbc._util.runs import epoch_number, keep_logged, open_run
from wbc.data.labels import named_twice
from wbc.data.sources import (
    Row,
    SourceInfo,
    balanced_weights,
    load_rows,
    parse_sources,
    sources_digest,
    subsample,
)
from wbc.data.transforms import CellDataset
from wbc.errors import WbcError
from wbc.models.classifier import (
    CellClassifier,
    ModelSpec,
    frozen_bn_eval,
    set_trainable,
)
from wbc.models.colours import fit_colours
from wbc.models.io import load_model_file, save_model, warm_start
from wbc.training.config import TrainConfig
from wbc.training.metrics import scores
from wbc.training.openset import (
    OpenSetConfig,
    colour_table,
    fit_statistics,
    min_distance,
    set_thresholds,
)

log = logging.getLogger(__name__)
OPENSET_PER_CLASS = 1000  # training cells a source's class for the open-set statistics (Kaggle's are copies of few cells)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(cfg: TrainConfig, run: Path, progress) -> tuple[list[Row], list[Row], list[str], dict[str, SourceInfo]]:
    """(train rows, val rows, classes (the union over sources), what is known of each source)."""
    rows, infos = load_rows(parse_sources(cfg.data, cfg.manifest), run, cfg.val_fraction, cfg.seed, progress)
    train = [r for r in rows if r.split == "train"]
    val = [r for r in rows if r.split == "val"]
    if cfg.max_per_class:
        train, val = subsample(train, cfg.max_per_class, cfg.seed), subsample(val, cfg.max_per_class, cfg.seed)
    classes = sorted({r.label for r in train})
    for names in named_twice(classes):
        log.warning("classes %s may be one cell type named two ways: each is trained as a class of its own "
                    "(rename the folders alike to merge them)", " and ".join(names))
    return train, val, classes, infos


def selection_score(v: dict) -> float:
    """Mean over sources of balanced accuracy on the group-disjoint validation split; lower loss breaks ties."""
    return v["balanced_accuracy"] - 0.01 * v["loss"]


def loader(rows: list[Row], classes, infos: dict[str, SourceInfo], cfg: TrainConfig, augment: bool, epoch_size: int = 0) -> DataLoader:
    ds = CellDataset([r.path for r in rows], [classes.index(r.label) for r in rows], [infos[r.source].px_per_um for r in rows],
                     cfg.size, cfg.field_um, cfg.augment if augment else None, cfg.white_balance, cfg.stain_norm, cfg.white_balance_image)
    sampler = WeightedRandomSampler(balanced_weights(rows, cfg.balance), num_samples=epoch_size or len(rows)) if augment else None
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, persistent_workers=False,
                      drop_last=augment and len(ds) > cfg.batch_size)


@torch.no_grad()
def predict_logits(model, dl, device, progress, what: str, features_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    outs, ys = [], []
    task = progress.add_task(what, total=len(dl.dataset))
    for x, y in dl:
        x = x.to(device, torch.float32).contiguous(memory_format=torch.channels_last)
        outs.append((model.features(x) if features_only else model(x)).float().cpu())
        ys.append(y)
        progress.advance(task, len(y))
    progress.remove_task(task)
    return torch.cat(outs), torch.cat(ys)


def cached_features(model, rows, classes, infos, cfg, device, run: Path, name: str, progress):
    """Backbone features of un-augmented images, saved so a resumed run skips this."""
    path = run / f"features_{name}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        if len(t["y"]) == len(rows):
            return t["x"], t["y"]
    feats, y = predict_logits(model, loader(rows, classes, infos, cfg, augment=False), device, progress, f"caching {name} features", True)
    atomic_save(path, lambda tmp: save_file({"x": feats.contiguous(), "y": y.contiguous()}, tmp))
    return feats, y


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017) on validation logits."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    return t if math.isfinite(t) else 1.0  # LBFGS can diverge on a handful of images


def review_threshold(probs: torch.Tensor, y: torch.Tensor, target: float = 0.98) -> float:
    """Lowest confidence such that validation images at or above it are `target` accurate (at most 0.995)."""
    conf, pred = probs.max(1)
    order = conf.argsort(descending=True)
    correct = (pred == y)[order].float()
    acc_at = correct.cumsum(0) / torch.arange(1, len(y) + 1)
    ok = (acc_at >= target).nonzero()
    if len(ok) == 0:
        return 0.995
    return min(0.995, float(conf[order][ok.max()]))


VOUCHING_FLOOR = 0.97  # the accuracy issue 17 asks of the unflagged answers on any lab


def unvouched(probs: torch.Tensor, y: torch.Tensor, classes: list[str], threshold: float, floor: float = VOUCHING_FLOOR) -> dict[str, list[int]]:
    """The classes whose validation answers at or above `threshold` fall under `floor` right: {class: [right, answers]}.
    One threshold is fitted over every class, and a class whose surest answers sit at it rides on the others: the
    shipped model's NEUTROPHIL answers top out at 0.945 for a threshold of 0.944, and the six above it were two
    neutrophils and four Kaggle eosinophils, the unflagged error under eight drawn cameras of every Kaggle row that had
    one (docs/results.md, session 31). Every answer of such a class is flagged (ModelSpec.always_review)."""
    conf, pred = probs.max(1)
    out = {}
    for k, c in enumerate(classes):
        sure = (pred == k) & (conf >= threshold)
        answers, right = int(sure.sum()), int((y[sure] == k).sum())
        if right < floor * answers:
            out[c] = [right, answers]
    return out


class Logger:
    """metrics.csv (always) and TensorBoard (when installed)."""

    FIELDS = ["round", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr", "seconds"]

    def __init__(self, run: Path):
        self.path = run / "metrics.csv"
        if not self.path.exists():
            self.path.write_text(",".join(self.FIELDS) + "\n")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"))
        except Exception:
            self.tb = None

    def log(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow({k: row.get(k, "") for k in self.FIELDS})
        if self.tb:
            step = row["round"] * 1000 + row["epoch"]
            for k in self.FIELDS[2:]:
                if isinstance(row.get(k), float):
                    self.tb.add_scalar(f"round{row['round']}/{k}", row[k], step)
            self.tb.flush()


def save_checkpoint(run: Path, state: dict) -> None:
    atomic_save(run / "last.pt", lambda tmp: torch.save(state, tmp))


@dataclass
class Fit:
    """What the rounds share: the run folder, model, data, logger, and where training stands."""

    run: Path
    cfg: TrainConfig
    model: CellClassifier
    device: torch.device
    train_rows: list[Row]
    val_rows: list[Row]
    classes: list[str]
    infos: dict[str, SourceInfo]
    log: Logger
    progress: object
    ckpt: dict | None = None
    best: dict = field(default_factory=lambda: {"score": -math.inf, "epoch": None, "round": None})
    stage: dict = field(default_factory=lambda: {"round": 1, "epoch": 0, "bad": 0})

    @property
    def val_sources(self) -> list[str]:
        return [r.source for r in self.val_rows]

    def checkpoint(self, opt=None, sched=None, ema=None) -> None:
        save_checkpoint(self.run, {"model": self.model.state_dict(), "optimizer": opt.state_dict() if opt else None,
                                   **({"scheduler": sched.state_dict()} if sched else {}), **({"ema": ema.module.state_dict()} if ema else {}),
                                   "best": self.best, "stage": self.stage})

    def epoch_row(self, rnd: int, loss: float, acc: float, v: dict, lr: float, t0: float) -> None:
        self.log.log(dict(round=rnd, epoch=self.stage["epoch"], train_loss=loss, train_accuracy=acc, val_loss=v["loss"],
                          val_accuracy=v["accuracy"], val_balanced_accuracy=v["balanced_accuracy"], lr=lr, seconds=time.time() - t0))


def train_head_epoch(head, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, opt, cfg: TrainConfig, device, g) -> tuple[float, float]:
    """One round-1 epoch: the head on cached features, examples drawn source- and class-balanced."""
    head.train()
    perm = torch.multinomial(weights, len(y), replacement=True, generator=g)
    losses, hits = [], 0
    for i in range(0, len(perm), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        out = head(x[idx].to(device))
        loss = F.cross_entropy(out, y[idx].to(device), label_smoothing=cfg.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        hits += (out.argmax(1).cpu() == y[idx]).sum().item()
    return float(np.mean(losses)), hits / len(y)


def train_one_epoch(model, dl: DataLoader, opt, sched, cfg: TrainConfig, device, progress, epoch: int, ema=None) -> tuple[float, float]:
    """One round-2 epoch over augmented, balanced draws (torchvision's train_one_epoch shape); `ema` (timm's
    ModelEmaV3) follows the weights after every step."""
    model.train()
    frozen_bn_eval(model, every=cfg.bn == "frozen")
    losses, hits, seen = [], 0, 0
    steps = progress.add_task(f"epoch {epoch}", total=len(dl))
    for x, y in dl:
        x = x.to(device, torch.float32).contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.sam:
            sharpness_aware(model, lambda: F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing), cfg.sam)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        losses.append(loss.item())
        hits += (out.argmax(1) == y).sum().item()
        seen += len(y)
        progress.update(steps, advance=1, description=f"epoch {epoch} loss {np.mean(losses[-20:]):.3f}")
    progress.remove_task(steps)
    return float(np.mean(losses)), hits / max(seen, 1)


def sharpness_aware(model, loss_fn, rho: float) -> None:
    """Turn the gradients in `model` (of the batch's loss) into SAM's (Foret et al. 2021): those at the weights moved
    `rho` along the normalised gradient, the steepest point of their neighbourhood, so the step seeks a flat minimum.
    Flat minima rank a model's right answers above its wrong ones better (Zhu et al. 2022, failure prediction),
    which is what the review flag's coverage needs. Batch-norm statistics are not updated by the second pass."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    with torch.no_grad():
        moved = [p.grad * (rho / (norm + 1e-12)) for p in params]
        torch._foreach_add_(params, moved)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    kept = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) x running: unchanged by the second pass
    model.zero_grad(set_to_none=False)
    loss_fn().backward()
    for m, (momentum, tracked) in zip(bns, kept):
        m.momentum = momentum
        m.num_batches_tracked.copy_(tracked)
    with torch.no_grad():
        torch._foreach_sub_(params, moved)


def start_as_candidate(fit: Fit) -> None:
    """No round 1 (`round1_epochs` 0, a model given by `init`): the starting model is scored on validation as
    the first candidate, so round 2 keeps it unless an epoch beats it."""
    val_dl = loader(fit.val_rows, fit.classes, fit.infos, fit.cfg, augment=False)
    t0 = time.time()
    v = scores(*predict_logits(fit.model, val_dl, fit.device, fit.progress, "validating the starting model"), fit.val_sources)
    fit.epoch_row(1, math.nan, math.nan, v, 0.0, t0)
    fit.best = {"score": selection_score(v), "epoch": 0, "round": 1, "val": v}
    save_model(fit.model, fit.run / "model.safetensors", {"partial": True})
    log.info(f"starting model: val balanced accuracy {v['balanced_accuracy']:.3f}")


def round1(fit: Fit) -> None:
    """Backbone frozen: the head trained on cached features; the best head (on validation) kept."""
    cfg, model, stage = fit.cfg, fit.model, fit.stage
    xtr, ytr = cached_features(model, fit.train_rows, fit.classes, fit.infos, cfg, fit.device, fit.run, "train", fit.progress)
    xva, yva = cached_features(model, fit.val_rows, fit.classes, fit.infos, cfg, fit.device, fit.run, "val", fit.progress)
    weights = torch.tensor(balanced_weights(fit.train_rows, cfg.balance), dtype=torch.double)
    opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.round1_lr, weight_decay=cfg.weight_decay)
    if fit.ckpt and fit.ckpt.get("optimizer") and fit.ckpt["stage"]["round"] == 1:
        opt.load_state_dict(fit.ckpt["optimizer"])
    task = fit.progress.add_task("round 1 (frozen backbone)", total=cfg.round1_epochs, completed=stage["epoch"])
    g = torch.Generator().manual_seed(cfg.seed + stage["epoch"])
    while stage["epoch"] < cfg.round1_epochs and stage["bad"] < cfg.patience * 3:
        t0 = time.time()
        loss, acc = train_head_epoch(model.head, xtr, ytr, weights, opt, cfg, fit.device, g)
        model.head.eval()
        with torch.no_grad():
            v = scores(model.head(xva.to(fit.device)).cpu(), yva, fit.val_sources)
        stage["epoch"] += 1
        improved = selection_score(v) > fit.best["score"]
        fit.epoch_row(1, loss, acc, v, cfg.round1_lr, t0)
        stage["bad"] = 0 if improved else stage["bad"] + 1
        if improved:
            fit.best = {"score": selection_score(v), "epoch": stage["epoch"], "round": 1, "val": v}
            save_model(model, fit.run / "model.safetensors", {"partial": True})
            torch.save(model.head.state_dict(), fit.run / "best_head.pt")
        fit.progress.update(task, advance=1, description=f"round 1 val bal. acc {v['balanced_accuracy']:.3f}")
        fit.checkpoint(opt)
    model.head.load_state_dict(torch.load(fit.run / "best_head.pt", weights_only=True))
    log.info(f"round 1: best val balanced accuracy {fit.best['val']['balanced_accuracy']:.3f} (epoch {fit.best['epoch']})")


def weights_average(fit: Fit):
    """With `ema`, the moving average of round 2's weights (timm's ModelEmaV3), started from the weights round 2
    starts from and restored on resume: validated and kept instead of the weights as they are, which a few
    hundred steps on small validation splits swing by points (the 192-px run: 0.893, 0.910, 0.898)."""
    if not fit.cfg.ema:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(fit.model, decay=fit.cfg.ema)
    if fit.ckpt and fit.ckpt["stage"]["round"] == 2 and "ema" in fit.ckpt:
        ema.module.load_state_dict(fit.ckpt["ema"])
    return ema


def round2_groups(model, cfg: TrainConfig) -> list:
    """Round 2's parameter groups: one at `round2_lr`; with `layer_decay` below 1, the head's at that rate and each
    backbone block at `layer_decay` times the rate of the block above it (timm's `param_groups_layer_decay`, BEiT's
    layer-wise decay, which also spares biases and norms the weight decay), so the early, generic filters move least.
    Meant against round 2's overfitting on Kaggle's 207 training source cells; at 0.9 it did not help Lite2
    (docs/results.md, session 29): the early blocks, it seems, have stain and texture to learn."""
    if cfg.layer_decay >= 1:  # one group, as before the option (a resumed run's optimizer state matches it)
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(model.backbone, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    head = {"params": [p for p in model.head.parameters() if p.requires_grad], "lr": cfg.round2_lr}
    return [head, *({**g, "lr": cfg.round2_lr * g["lr_scale"]} for g in groups)]


def round2(fit: Fit) -> None:
    """Backbone unfrozen at a very low learning rate, augmentation, balanced sampling; early stopping."""
    cfg, model = fit.cfg, fit.model
    set_trainable(model, cfg.train_stages)
    opt = torch.optim.AdamW(round2_groups(model, cfg), lr=cfg.round2_lr, weight_decay=cfg.weight_decay)
    train_dl = loader(fit.train_rows, fit.classes, fit.infos, cfg, augment=True, epoch_size=cfg.epoch_size)
    val_dl = loader(fit.val_rows, fit.classes, fit.infos, cfg, augment=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.round2_epochs * len(train_dl)))
    if fit.ckpt and fit.ckpt["stage"]["round"] == 2 and fit.ckpt.get("optimizer"):
        opt.load_state_dict(fit.ckpt["optimizer"])
        sched.load_state_dict(fit.ckpt["scheduler"])
    stage, ema = fit.stage, weights_average(fit)
    kept = ema.module if ema else model  # what is validated and saved
    task = fit.progress.add_task("round 2 (fine-tuning)", total=cfg.round2_epochs, completed=stage["epoch"])
    while stage["epoch"] < cfg.round2_epochs and stage["bad"] < cfg.patience:
        t0 = time.time()
        torch.manual_seed(cfg.seed * 1000 + stage["epoch"])  # a resumed epoch sees a fresh, reproducible order
        loss, acc = train_one_epoch(model, train_dl, opt, sched, cfg, fit.device, fit.progress, stage["epoch"] + 1, ema)
        v = scores(*predict_logits(kept, val_dl, fit.device, fit.progress, "validating"), fit.val_sources)
        stage["epoch"] += 1
        score = selection_score(v)
        fit.epoch_row(2, loss, acc, v, sched.get_last_lr()[0], t0)
        # patience counts against round 2's own best: its first epochs, under new augmentation and an
        # unfrozen backbone, may sit below round 1's score without the run being over
        if score > stage.get("best", -math.inf):
            stage["best"], stage["bad"] = score, 0
        else:
            stage["bad"] += 1
        if score > fit.best["score"]:
            fit.best = {"score": score, "epoch": stage["epoch"], "round": 2, "val": v}
            save_model(kept, fit.run / "model.safetensors", {"partial": True})
        fit.progress.update(task, advance=1, description=f"round 2 val bal. acc {v['balanced_accuracy']:.3f}")
        fit.checkpoint(opt, sched, ema)


def fit_openset(model, train_rows: list[Row], val_rows: list[Row], infos: dict[str, SourceInfo], cfg: TrainConfig, device, progress,
                openset: OpenSetConfig | None = None) -> dict:
    """The training cells' feature statistics (un-augmented views, at most OPENSET_PER_CLASS a source's class)
    and the near/far distances from the validation cells (wbc.training.openset)."""
    classes = list(model.spec.classes)
    rows = subsample(train_rows, OPENSET_PER_CLASS, cfg.seed)
    feats, y = predict_logits(model, loader(rows, classes, infos, cfg, augment=False), device, progress, "open-set statistics", True)
    fit_statistics(model, feats, y)
    vf, _ = predict_logits(model, loader(val_rows, classes, infos, cfg, augment=False), device, progress, "validation distances", True)
    return set_thresholds(model.spec, min_distance(model, vf).numpy(), openset or OpenSetConfig())


COLOUR_PER_CLASS = 100  # training views a source's class for its colour Gaussian (wbc.models.colours)
COLOUR_QUANTILE = 0.995  # of the training views' colour distances: the limit a run's share beyond is judged by


def fit_colour_check(spec: ModelSpec, train_rows: list[Row], val_rows: list[Row], infos: dict[str, SourceInfo], cfg: TrainConfig) -> dict:
    """The spec's colour statistics: a Gaussian of each source's training views, their limit, and the share of the
    validation views beyond it (the run-level colour check of wbc.infer.predictor.LabCheck)."""
    classes = list(spec.classes)
    rows = subsample(train_rows, COLOUR_PER_CLASS, cfg.seed)
    table = colour_table(loader(rows, classes, infos, cfg, augment=False))
    by_source = {name: table[[r.source == name for r in rows]] for name in sorted({r.source for r in rows})}
    val = subsample(val_rows, COLOUR_PER_CLASS, cfg.seed)
    spec.colours = fit_colours(by_source, colour_table(loader(val, classes, infos, cfg, augment=False)) if val else None, COLOUR_QUANTILE)
    return {"limit": spec.colours.get("limit"), "val_share": spec.colours.get("val_share"), "views": {k: len(v) for k, v in by_source.items()}}


def calibrate_and_save(fit: Fit) -> Path:
    """Temperature and review threshold fitted on validation; the final model file with its provenance."""
    cfg, run = fit.cfg, fit.run
    model, _ = load_model_file(run / "model.safetensors", fit.device)
    logits, yv = predict_logits(model, loader(fit.val_rows, fit.classes, fit.infos, cfg, augment=False), fit.device, fit.progress, "calibrating")
    spec = model.spec
    spec.temperature = fit_temperature(logits, yv)
    probs = torch.softmax(logits / spec.temperature, 1)
    spec.review_threshold = review_threshold(probs, yv, cfg.review_accuracy)
    spec.always_review = unvouched(probs, yv, list(spec.classes), spec.review_threshold)
    val = scores(logits, yv, fit.val_sources)
    val["openset"] = fit_openset(model, fit.train_rows, fit.val_rows, fit.infos, cfg, fit.device, fit.progress)
    val["colours"] = fit_colour_check(spec, fit.train_rows, fit.val_rows, fit.infos, cfg)
    always = torch.tensor(spec.always_reviewed_ids(), dtype=torch.long)
    kept = (probs.max(1).values >= spec.review_threshold) & ~torch.isin(probs.argmax(1), always)
    val["review"] = {"threshold": spec.review_threshold, "always_reviewed": spec.always_review, "flagged": float(1 - kept.float().mean()),
                     "accuracy_unflagged": float((probs.argmax(1) == yv)[kept].float().mean()) if kept.any() else None}
    if val["review"]["flagged"] > 0.9:
        log.warning(f"the review threshold {spec.review_threshold:.3f} flags {100 * val['review']['flagged']:.0f}% of validation: no "
                    f"confidence reaches {100 * cfg.review_accuracy:.0f}% accuracy there, so nearly every answer goes to review "
                    "(train longer, add data, or lower --review-accuracy)")
    tr, va = fit.train_rows, fit.val_rows
    info = {
        "sources": {k: v.__dict__ for k, v in fit.infos.items()},
        "sources_sha256": sources_digest(fit.infos),
        "trained_on": {"train_images": len(tr), "val_images": len(va),
                       "train_groups": len({(r.source, r.group) for r in tr}), "val_groups": len({(r.source, r.group) for r in va})},
        "best": {"round": fit.best["round"], "epoch": fit.best["epoch"]},
        "metrics": {"val": val},
        "config": json.loads(json.dumps(asdict(cfg))),
    }
    save_model(model, run / "model.safetensors", info)
    atomic_write_text(run / "summary.json", json.dumps(info, indent=2))
    log.info(f"val accuracy {val['accuracy']:.3f}, balanced (mean over sources) {val['balanced_accuracy']:.3f} "
             f"(round {fit.best['round']} epoch {fit.best['epoch']}); temperature {spec.temperature:.2f}, "
             f"review below {spec.review_threshold:.3f} ({val['review']['flagged']:.1%} of val flagged)")
    log.info(f"model written to {run / 'model.safetensors'}")
    return run / "model.safetensors"


def own_data(info: dict, manifests: list[str] = ()) -> tuple[TrainConfig, list[Row], list[Row], dict[str, SourceInfo]]:
    """(the framing settings, train rows, val rows, sources) a trained model file was made from (its `info`), to fit
    its statistics again; `manifests` (NAME=FILE) for split manifests that moved, which must hash as recorded."""
    import tempfile

    conf = info["config"]
    keep = ("size", "field_um", "val_fraction", "seed", "batch_size", "white_balance", "white_balance_image", "stain_norm")
    cfg = TrainConfig(**{k: v for k, v in conf.items() if k in keep})
    given = dict(m.split("=", 1) for m in manifests)
    named = [f"{k}={v}" for k, v in (dict(m.split("=", 1) for m in conf["manifest"]) | given).items()]
    with tempfile.TemporaryDirectory() as tmp:
        rows, infos = load_rows(parse_sources(conf["data"], named), Path(tmp), cfg.val_fraction, cfg.seed)
    for name, src in infos.items():
        want = info["sources"][name]["manifest_sha256"]
        if src.manifest_sha256 != want:
            raise WbcError(f"{name}: the manifest found does not hash as the one the model was trained with ({want[:12]})")
    return cfg, [r for r in rows if r.split == "train"], [r for r in rows if r.split == "val"], infos


def start(cfg: TrainConfig, resume: bool, progress) -> Fit:
    """Open (or resume) the run folder, prepare every source's split, build the model."""
    cfg.check(resume)
    run, cfg = open_run(cfg.out, cfg, resume, TrainConfig.load)
    cfg.save(run / "config.json")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True) if resume else None
    train_rows, val_rows, classes, infos = prepare_data(cfg, run, progress)
    for name, i in infos.items():
        log.info(f"{name}: train {sum(i.counts['train'].values())} images / {i.groups['train']} source images, "
                 f"val {sum(i.counts['val'].values())} / {i.groups['val']} (group-disjoint), "
                 f"{i.px_per_um:.2f} px/um, classes {', '.join(i.counts['train'])}")
    spec = ModelSpec(backbone=cfg.backbone, classes=classes, input_size=(cfg.size, cfg.size), field_um=cfg.field_um,
                     head=cfg.head, dropout=cfg.dropout, white_balance=cfg.white_balance, white_balance_image=cfg.white_balance_image,
                     stain_norm=cfg.stain_norm)
    model = CellClassifier(spec, pretrained=cfg.pretrained and ckpt is None and not cfg.init)
    if cfg.init and ckpt is None:
        fresh = warm_start(model, cfg.init)
        log.info(f"starting from {cfg.init}" + (f"; new classes {', '.join(fresh)}" if fresh else ""))
    model = model.to(device).to(memory_format=torch.channels_last)
    fit = Fit(run, cfg, model, device, train_rows, val_rows, classes, infos, Logger(run), progress, ckpt)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        fit.best, fit.stage = ckpt["best"], ckpt["stage"]
        keep_logged(fit.log.path, lambda r: (epoch_number(r["round"]), epoch_number(r["epoch"])) <= (fit.stage["round"], fit.stage["epoch"]))
        log.info(f"resuming {run}: round {fit.stage['round']}, {fit.stage['epoch']} epochs done")
    return fit


def train(cfg: TrainConfig, resume: bool = False, progress=None) -> Path:
    """Prepare data -> round 1 (cached features) -> round 2 (fine-tuning) -> calibrate -> save; resumable."""
    fit = start(cfg, resume, or_null(progress))
    if fit.stage["round"] == 1:
        (start_as_candidate if fit.cfg.round1_epochs == 0 else round1)(fit)
        fit.stage = {"round": 2, "epoch": 0, "bad": 0}
        fit.checkpoint()
    round2(fit)
    return calibrate_and_save(fit)
