"""Two-round transfer learning: head on frozen features, then fine-tuning at a very low rate.

Read top to bottom: prepare data -> round 1 (cached features) -> round 2 (augmented images,
last backbone stages unfrozen) -> calibrate on validation -> save. A checkpoint is written
atomically after every epoch; `resume=True` continues a killed run from it.
"""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, RandomSampler

from wbc.config import TrainConfig
from wbc.data.scan import scan
from wbc.data.split import make_manifest, manifest_hash, read_manifest, write_manifest
from wbc.data.transforms import ImageDataset
from wbc.device import pick_device
from wbc.errors import WbcError
from wbc.io_utils import atomic_save, atomic_write_text
from wbc.models.classifier import CellClassifier, ModelSpec, frozen_bn_eval, set_trainable
from wbc.models.io import save_model
from wbc.progress import bar, console


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_split(cfg: TrainConfig, run: Path, progress) -> tuple[list, list, list[str], Path]:
    """(train rows, val rows, classes, manifest path); makes the manifest if none was given."""
    manifest = Path(cfg.manifest) if cfg.manifest else run / "split_manifest.csv"
    if not manifest.is_file():
        if cfg.manifest:
            raise WbcError(f"split manifest not found: {manifest} (make one with `wbc data split`)")
        rows = make_manifest(scan(cfg.data, progress=progress), cfg.val_fraction, cfg.seed, progress=progress)
        write_manifest(rows, manifest)
    if manifest != run / "split_manifest.csv":  # keep the run self-describing
        atomic_save(run / "split_manifest.csv", lambda tmp: shutil.copyfile(manifest, tmp))
    rows = read_manifest(manifest, cfg.data)
    train = [r for r in rows if r.split == "train"]
    val = [r for r in rows if r.split == "val"]
    if cfg.max_per_class:
        train, val = subsample(train, cfg.max_per_class, cfg.seed), subsample(val, cfg.max_per_class, cfg.seed)
    if not train or not val:
        raise WbcError(f"{manifest} has no train or no val rows: re-make it with `wbc data split`")
    classes = sorted({r.label for r in train})
    return train, val, classes, manifest


def subsample(rows: list, per_class: int, seed: int) -> list:
    """At most `per_class` rows a class, taking one image per source group before any second."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    seen: dict[str, int] = {}
    ranked = []
    for r in rows:
        seen[r.group] = seen.get(r.group, 0) + 1
        ranked.append((seen[r.group], r))
    ranked.sort(key=lambda t: t[0])
    out, counts = [], {}
    for _, r in ranked:
        if counts.get(r.label, 0) < per_class:
            out.append(r)
            counts[r.label] = counts.get(r.label, 0) + 1
    return out


def selection_score(v: dict) -> float:
    """Balanced accuracy on the group-disjoint validation split; lower loss breaks ties."""
    return v["balanced_accuracy"] - 0.01 * v["loss"]


def loader(rows, classes, cfg: TrainConfig, augment: bool, epoch_size: int = 0) -> DataLoader:
    ds = ImageDataset([r.path for r in rows], [classes.index(r.label) for r in rows], cfg.input_size, augment, cfg.crop)
    sampler = RandomSampler(ds, num_samples=epoch_size) if augment and epoch_size else None
    return DataLoader(
        ds, batch_size=cfg.batch_size, shuffle=augment and sampler is None, sampler=sampler,
        num_workers=cfg.workers, persistent_workers=False, drop_last=augment and len(ds) > cfg.batch_size,
    )


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


def scores(logits: torch.Tensor, y: torch.Tensor) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    pred = logits.argmax(1)
    return {
        "loss": F.cross_entropy(logits, y).item(),
        "accuracy": (pred == y).float().mean().item(),
        "balanced_accuracy": float(balanced_accuracy_score(y.numpy(), pred.numpy())),
    }


def cached_features(model, rows, classes, cfg, device, run: Path, name: str, progress):
    """Backbone features of un-augmented images, saved so a resumed run skips this."""
    path = run / f"features_{name}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        if len(t["y"]) == len(rows):
            return t["x"], t["y"]
    feats, y = predict_logits(model, loader(rows, classes, cfg, augment=False), device, progress, f"caching {name} features", True)
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
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def review_threshold(probs: torch.Tensor, y: torch.Tensor, target: float = 0.95) -> float:
    """Lowest confidence above which validation accuracy reaches `target` (clipped to 0.5-0.95)."""
    conf, pred = probs.max(1)
    order = conf.argsort(descending=True)
    correct = (pred == y)[order].float()
    acc_at = correct.cumsum(0) / torch.arange(1, len(y) + 1)
    ok = (acc_at >= target).nonzero()
    if len(ok) == 0:
        return 0.95
    t = float(conf[order][ok.max()])
    return min(0.95, max(0.5, t))


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
    run = Path(cfg.out)
    ckpt_path = run / "last.pt"
    if resume:
        if not ckpt_path.is_file():
            raise WbcError(f"nothing to resume in {run}: no last.pt (start without --resume)")
        cfg = TrainConfig.load(run / "config.json")
    elif ckpt_path.exists():
        raise WbcError(f"{run} already holds a run: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.json")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    log = Logger(run)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True) if resume else None

    with bar() as progress:
        train_rows, val_rows, classes, manifest = prepare_split(cfg, run, progress)
        console.print(f"train {len(train_rows)} images / {len({r.group for r in train_rows})} source cells, "
                      f"val {len(val_rows)} / {len({r.group for r in val_rows})} (group-disjoint), classes {classes}")
        spec = ModelSpec(backbone=cfg.backbone, classes=classes, input_size=cfg.input_size, crop=cfg.crop, head=cfg.head, dropout=cfg.dropout)
        model = CellClassifier(spec, pretrained=cfg.pretrained and ckpt is None).to(device).to(memory_format=torch.channels_last)
        best = {"score": -math.inf, "epoch": None, "round": None}
        stage = {"round": 1, "epoch": 0, "bad": 0}
        if ckpt:
            model.load_state_dict(ckpt["model"])
            best, stage = ckpt["best"], ckpt["stage"]
            console.print(f"resuming {run}: round {stage['round']}, {stage['epoch']} epochs done")

        val_dl = loader(val_rows, classes, cfg, augment=False)

        # ---- round 1: frozen backbone, head on cached features ----------------------------
        if stage["round"] == 1:
            xtr, ytr = cached_features(model, train_rows, classes, cfg, device, run, "train", progress)
            xva, yva = cached_features(model, val_rows, classes, cfg, device, run, "val", progress)
            head = model.head
            opt = torch.optim.AdamW(head.parameters(), lr=cfg.round1_lr, weight_decay=cfg.weight_decay)
            if ckpt and ckpt.get("optimizer") and ckpt["stage"]["round"] == 1:
                opt.load_state_dict(ckpt["optimizer"])
            task = progress.add_task("round 1 (frozen backbone)", total=cfg.round1_epochs, completed=stage["epoch"])
            g = torch.Generator().manual_seed(cfg.seed)
            while stage["epoch"] < cfg.round1_epochs and stage["bad"] < cfg.patience * 3:
                t0 = time.time()
                head.train()
                perm = torch.randperm(len(ytr), generator=g)
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
                    v = scores(head(xva.to(device)).cpu(), yva)
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
                progress.update(task, advance=1, description=f"round 1 val acc {v['accuracy']:.3f}")
                save_checkpoint(run, {"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best, "stage": stage})
            model.head.load_state_dict(torch.load(run / "best_head.pt", weights_only=True))
            console.print(f"round 1: best val balanced accuracy {best['val']['balanced_accuracy']:.3f} (epoch {best['epoch']})")
            stage = {"round": 2, "epoch": 0, "bad": 0}
            save_checkpoint(run, {"model": model.state_dict(), "optimizer": None, "best": best, "stage": stage})

        # ---- round 2: unfreeze the last stages, very low learning rate, augmentation -------
        set_trainable(model, cfg.train_stages)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.round2_lr, weight_decay=cfg.weight_decay)
        train_dl = loader(train_rows, classes, cfg, augment=True, epoch_size=cfg.epoch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.round2_epochs * len(train_dl)))
        if ckpt and ckpt["stage"]["round"] == 2 and ckpt.get("optimizer"):
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        task = progress.add_task("round 2 (fine-tuning)", total=cfg.round2_epochs, completed=stage["epoch"])
        while stage["epoch"] < cfg.round2_epochs and stage["bad"] < cfg.patience:
            t0 = time.time()
            torch.manual_seed(cfg.seed * 1000 + stage["epoch"])  # a resumed epoch sees a fresh, reproducible order
            model.train()
            frozen_bn_eval(model)
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
            v = scores(logits, yv)
            stage["epoch"] += 1
            score = selection_score(v)
            log.log(dict(round=2, epoch=stage["epoch"], train_loss=float(np.mean(losses)), train_accuracy=hits / max(seen, 1),
                         val_loss=v["loss"], val_accuracy=v["accuracy"], val_balanced_accuracy=v["balanced_accuracy"],
                         lr=sched.get_last_lr()[0], seconds=time.time() - t0))
            if score > best["score"]:
                best = {"score": score, "epoch": stage["epoch"], "round": 2, "val": v}
                stage["bad"] = 0
                save_model(model, run / "model.safetensors", {"partial": True})
            else:
                stage["bad"] += 1
            progress.update(task, advance=1, description=f"round 2 val acc {v['accuracy']:.3f}")
            save_checkpoint(run, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                  "best": best, "stage": stage})

        # ---- calibrate on validation and save the final model -----------------------------
        from wbc.models.io import load_model_file

        model, _ = load_model_file(run / "model.safetensors", device)
        logits, yv = predict_logits(model, val_dl, device, progress, "calibrating")
    spec = model.spec
    spec.temperature = fit_temperature(logits, yv)
    probs = torch.softmax(logits / spec.temperature, 1)
    spec.review_threshold = review_threshold(probs, yv)
    val = scores(logits, yv)
    info = {
        "split_manifest_sha256": manifest_hash(manifest),
        "trained_on": {"train_images": len(train_rows), "val_images": len(val_rows),
                        "train_groups": len({r.group for r in train_rows}), "val_groups": len({r.group for r in val_rows})},
        "best": {"round": best["round"], "epoch": best["epoch"]},
        "metrics": {"val": val},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    save_model(model, run / "model.safetensors", info)
    atomic_write_text(run / "summary.json", json.dumps(info, indent=2))
    console.print(f"val accuracy {val['accuracy']:.3f}, balanced {val['balanced_accuracy']:.3f} "
                  f"(round {best['round']} epoch {best['epoch']}); temperature {spec.temperature:.2f}, "
                  f"review below {spec.review_threshold:.2f}")
    console.print(f"model written to {run / 'model.safetensors'}")
    return run / "model.safetensors"
