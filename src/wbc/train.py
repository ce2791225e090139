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
import math
import random
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, WeightedRandomSampler

from wbc.config import TrainConfig
from wbc.data.sources import Row, SourceInfo, balanced_weights, load_rows, parse_sources, sources_digest, subsample
from wbc.data.transforms import CellDataset
from wbc.device import pick_device
from wbc.errors import WbcError
from wbc.io_utils import atomic_save, atomic_write_text
from wbc.models.classifier import CellClassifier, ModelSpec, frozen_bn_eval, set_trainable
from wbc.models.io import save_model
from wbc.progress import bar, console
from wbc.runs import epoch_number, keep_logged, open_run


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
    return train, val, sorted({r.label for r in train}), infos


def selection_score(v: dict) -> float:
    """Mean over sources of balanced accuracy on the group-disjoint validation split; lower loss breaks ties."""
    return v["balanced_accuracy"] - 0.01 * v["loss"]


def loader(rows: list[Row], classes, infos: dict[str, SourceInfo], cfg: TrainConfig, augment: bool, epoch_size: int = 0) -> DataLoader:
    ds = CellDataset([r.path for r in rows], [classes.index(r.label) for r in rows], [infos[r.source].px_per_um for r in rows],
                     cfg.size, cfg.field_um, cfg.augment if augment else None)
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


def scores(logits: torch.Tensor, y: torch.Tensor, sources: list[str] | None = None) -> dict:
    """Loss, accuracy and balanced accuracy; with `sources`, each per source and balanced accuracy
    as the mean of the sources' own (so a big source cannot hide a small one)."""
    from sklearn.metrics import balanced_accuracy_score

    def one(lg, yy):
        pred = lg.argmax(1)
        with warnings.catch_warnings():  # a source predicted into a class it has none of: fine, it counts as a miss
            warnings.simplefilter("ignore")
            bal = float(balanced_accuracy_score(yy.numpy(), pred.numpy()))
        return {"loss": F.cross_entropy(lg, yy).item(), "accuracy": (pred == yy).float().mean().item(), "balanced_accuracy": bal}

    out = one(logits, y)
    names = sorted(set(sources or []))
    if len(names) > 1:
        out["per_source"] = {n: one(logits[m], y[m]) for n in names for m in [torch.tensor([s == n for s in sources])]}
        out["balanced_accuracy"] = float(np.mean([v["balanced_accuracy"] for v in out["per_source"].values()]))
    return out


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


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    if cfg.bn not in ("train", "frozen"):
        raise WbcError(f"--bn must be train or frozen, not '{cfg.bn}'")
    run, cfg = open_run(cfg.out, cfg, resume, TrainConfig.load)
    ckpt_path = run / "last.pt"
    cfg.save(run / "config.json")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    log = Logger(run)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True) if resume else None

    with bar() as progress:
        train_rows, val_rows, classes, infos = prepare_data(cfg, run, progress)
        for name, i in infos.items():
            console.print(f"{name}: train {sum(i.counts['train'].values())} images / {i.groups['train']} source images, "
                          f"val {sum(i.counts['val'].values())} / {i.groups['val']} (group-disjoint), "
                          f"{i.px_per_um:.2f} px/um, classes {', '.join(i.counts['train'])}", highlight=False)
        val_sources = [r.source for r in val_rows]
        spec = ModelSpec(backbone=cfg.backbone, classes=classes, input_size=(cfg.size, cfg.size), field_um=cfg.field_um,
                         head=cfg.head, dropout=cfg.dropout)
        model = CellClassifier(spec, pretrained=cfg.pretrained and ckpt is None).to(device).to(memory_format=torch.channels_last)
        best = {"score": -math.inf, "epoch": None, "round": None}
        stage = {"round": 1, "epoch": 0, "bad": 0}
        if ckpt:
            model.load_state_dict(ckpt["model"])
            best, stage = ckpt["best"], ckpt["stage"]
            keep_logged(log.path, lambda r: (epoch_number(r["round"]), epoch_number(r["epoch"])) <= (stage["round"], stage["epoch"]))
            console.print(f"resuming {run}: round {stage['round']}, {stage['epoch']} epochs done")

        val_dl = loader(val_rows, classes, infos, cfg, augment=False)

        # ---- round 1: frozen backbone, head on cached features (balanced draws) --------------
        if stage["round"] == 1:
            xtr, ytr = cached_features(model, train_rows, classes, infos, cfg, device, run, "train", progress)
            xva, yva = cached_features(model, val_rows, classes, infos, cfg, device, run, "val", progress)
            weights = torch.tensor(balanced_weights(train_rows, cfg.balance), dtype=torch.double)
            head = model.head
            opt = torch.optim.AdamW(head.parameters(), lr=cfg.round1_lr, weight_decay=cfg.weight_decay)
            if ckpt and ckpt.get("optimizer") and ckpt["stage"]["round"] == 1:
                opt.load_state_dict(ckpt["optimizer"])
            task = progress.add_task("round 1 (frozen backbone)", total=cfg.round1_epochs, completed=stage["epoch"])
            g = torch.Generator().manual_seed(cfg.seed + stage["epoch"])
            while stage["epoch"] < cfg.round1_epochs and stage["bad"] < cfg.patience * 3:
                t0 = time.time()
                head.train()
                perm = torch.multinomial(weights, len(ytr), replacement=True, generator=g)
                losses, hits = [], 0
                for i in range(0, len(perm), cfg.batch_size):
                    idx = perm[i : i + cfg.batch_size]
                    out = head(xtr[idx].to(device))
                    loss = F.cross_entropy(out, ytr[idx].to(device), label_smoothing=cfg.label_smoothing)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                    hits += (out.argmax(1).cpu() == ytr[idx]).sum().item()
                head.eval()
                with torch.no_grad():
                    v = scores(head(xva.to(device)).cpu(), yva, val_sources)
                stage["epoch"] += 1
                improved = selection_score(v) > best["score"]
                row = dict(round=1, epoch=stage["epoch"], train_loss=float(np.mean(losses)), train_accuracy=hits / len(ytr),
                           val_loss=v["loss"], val_accuracy=v["accuracy"], val_balanced_accuracy=v["balanced_accuracy"],
                           lr=cfg.round1_lr, seconds=time.time() - t0)
                log.log(row)
                stage["bad"] = 0 if improved else stage["bad"] + 1
                if improved:
                    best = {"score": selection_score(v), "epoch": stage["epoch"], "round": 1, "val": v}
                    save_model(model, run / "model.safetensors", {"partial": True})
                    torch.save(model.head.state_dict(), run / "best_head.pt")
                progress.update(task, advance=1, description=f"round 1 val bal. acc {v['balanced_accuracy']:.3f}")
                save_checkpoint(run, {"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best, "stage": stage})
            model.head.load_state_dict(torch.load(run / "best_head.pt", weights_only=True))
            console.print(f"round 1: best val balanced accuracy {best['val']['balanced_accuracy']:.3f} (epoch {best['epoch']})")
            stage = {"round": 2, "epoch": 0, "bad": 0}
            save_checkpoint(run, {"model": model.state_dict(), "optimizer": None, "best": best, "stage": stage})

        # ---- round 2: unfreeze, very low learning rate, augmentation, balanced sampling -------
        set_trainable(model, cfg.train_stages)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.round2_lr, weight_decay=cfg.weight_decay)
        train_dl = loader(train_rows, classes, infos, cfg, augment=True, epoch_size=cfg.epoch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.round2_epochs * len(train_dl)))
        if ckpt and ckpt["stage"]["round"] == 2 and ckpt.get("optimizer"):
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        task = progress.add_task("round 2 (fine-tuning)", total=cfg.round2_epochs, completed=stage["epoch"])
        while stage["epoch"] < cfg.round2_epochs and stage["bad"] < cfg.patience:
            t0 = time.time()
            torch.manual_seed(cfg.seed * 1000 + stage["epoch"])  # a resumed epoch sees a fresh, reproducible order
            model.train()
            frozen_bn_eval(model, every=cfg.bn == "frozen")
            losses, hits, seen = [], 0, 0
            steps = progress.add_task(f"epoch {stage['epoch'] + 1}", total=len(train_dl))
            for x, y in train_dl:
                x = x.to(device, torch.float32).contiguous(memory_format=torch.channels_last)
                y = y.to(device)
                out = model(x)
                loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                hits += (out.argmax(1) == y).sum().item()
                seen += len(y)
                progress.update(steps, advance=1, description=f"epoch {stage['epoch'] + 1} loss {np.mean(losses[-20:]):.3f}")
            progress.remove_task(steps)
            logits, yv = predict_logits(model, val_dl, device, progress, "validating")
            v = scores(logits, yv, val_sources)
            stage["epoch"] += 1
            score = selection_score(v)
            log.log(dict(round=2, epoch=stage["epoch"], train_loss=float(np.mean(losses)), train_accuracy=hits / max(seen, 1),
                         val_loss=v["loss"], val_accuracy=v["accuracy"], val_balanced_accuracy=v["balanced_accuracy"],
                         lr=sched.get_last_lr()[0], seconds=time.time() - t0))
            # patience counts against round 2's own best: its first epochs, under new augmentation and an
            # unfrozen backbone, may sit below round 1's score without the run being over
            if score > stage.get("best", -math.inf):
                stage["best"], stage["bad"] = score, 0
            else:
                stage["bad"] += 1
            if score > best["score"]:
                best = {"score": score, "epoch": stage["epoch"], "round": 2, "val": v}
                save_model(model, run / "model.safetensors", {"partial": True})
            progress.update(task, advance=1, description=f"round 2 val bal. acc {v['balanced_accuracy']:.3f}")
            save_checkpoint(run, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                  "best": best, "stage": stage})

        # ---- calibrate on validation and save the final model -----------------------------
        from wbc.models.io import load_model_file

        model, _ = load_model_file(run / "model.safetensors", device)
        logits, yv = predict_logits(model, val_dl, device, progress, "calibrating")
    spec = model.spec
    spec.temperature = fit_temperature(logits, yv)
    probs = torch.softmax(logits / spec.temperature, 1)
    spec.review_threshold = review_threshold(probs, yv, cfg.review_accuracy)
    val = scores(logits, yv, val_sources)
    kept = probs.max(1).values >= spec.review_threshold
    val["review"] = {"threshold": spec.review_threshold, "flagged": float(1 - kept.float().mean()),
                     "accuracy_unflagged": float((probs.argmax(1) == yv)[kept].float().mean()) if kept.any() else None}
    info = {
        "sources": {k: v.__dict__ for k, v in infos.items()},
        "sources_sha256": sources_digest(infos),
        "trained_on": {"train_images": len(train_rows), "val_images": len(val_rows),
                       "train_groups": len({(r.source, r.group) for r in train_rows}), "val_groups": len({(r.source, r.group) for r in val_rows})},
        "best": {"round": best["round"], "epoch": best["epoch"]},
        "metrics": {"val": val},
        "config": json.loads(json.dumps(asdict(cfg))),
    }
    save_model(model, run / "model.safetensors", info)
    atomic_write_text(run / "summary.json", json.dumps(info, indent=2))
    console.print(f"val accuracy {val['accuracy']:.3f}, balanced (mean over sources) {val['balanced_accuracy']:.3f} "
                  f"(round {best['round']} epoch {best['epoch']}); temperature {spec.temperature:.2f}, "
                  f"review below {spec.review_threshold:.3f} ({val['review']['flagged']:.1%} of val flagged)")
    console.print(f"model written to {run / 'model.safetensors'}")
    return run / "model.safetensors"
