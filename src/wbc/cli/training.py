"""`wbc train` and `wbc adapt`: the classifier trained on sources, adapted to a lab."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from wbc.cli import MAKE, ModelOpt, app
from wbc.cli.render import bar, console, table
from wbc.errors import WbcError, check_ranges
from wbc.training.config import TrainConfig

T = TrainConfig()  # every option's default is the config's own


@app.command(rich_help_panel=MAKE)
def train(data: Optional[list[str]] = typer.Option(None, "--data", help="training source, NAME=DIR (repeat for several: --data kaggle=DIR --data pbc=DIR); "
                                                   "default: $WBC_DATA or ../shared/data/blood-cells"),
          manifest: Optional[list[str]] = typer.Option(None, help="a source's split manifest, NAME=FILE (made in the run when absent)"),
          out: Path = typer.Option(Path(T.out), help="run folder"), backbone: str = typer.Option(T.backbone, help="timm model name (xception: the reference design)"),
          pretrained: bool = typer.Option(T.pretrained, "--pretrained/--no-pretrained", help="start from ImageNet weights"),
          init: str = typer.Option(T.init, help="start from this wbc model file instead (same backbone and head, any size; its classes' "
                                                 "output rows kept, new classes fresh): adds a class or a source to a trained model; "
                                                 "with --round1-epochs 0 its head is kept and round 2 starts at once"),
          white_balance: bool = typer.Option(T.white_balance, "--white-balance/--no-white-balance",
                                             help="make each view's background neutral before the model (other labs' light and stain)"),
          white_balance_image: bool = typer.Option(T.white_balance_image, "--white-balance-image/--no-white-balance-image",
                                                   help="first make the whole image's background neutral (its plasma; the view's is crowded by red cells)"),
          stain_norm: bool = typer.Option(T.stain_norm, "--stain-norm/--no-stain-norm",
                                          help="move each view's colours to one fixed L*a*b* world (Reinhard) before the model"),
          size: int = typer.Option(T.size, help="model input side (pixels)"), field_um: float = typer.Option(T.field_um, help="width of the view around the cell, micrometres"),
          head: str = typer.Option(",".join(map(str, T.head)), help="dense layer sizes"),
          dropout: float = typer.Option(T.dropout), batch_size: int = typer.Option(T.batch_size), round1_epochs: int = typer.Option(T.round1_epochs),
          round1_lr: float = typer.Option(T.round1_lr), round2_epochs: int = typer.Option(T.round2_epochs), round2_lr: float = typer.Option(T.round2_lr),
          train_stages: int = typer.Option(T.train_stages, help="backbone stages trained in round 2 (-1: all)"),
          layer_decay: float = typer.Option(T.layer_decay, help="round 2: each backbone block learns at this times the rate of the block above it, "
                                            "the head at --round2-lr (e.g. 0.9: early blocks move least; 1: one rate)"),
          bn: str = typer.Option(T.bn, help="round-2 batch-norm statistics: train (updated) or frozen"),
          epoch_size: int = typer.Option(T.epoch_size, help="images per round-2 epoch, source- and class-balanced (0: the train split's size)"),
          patience: int = typer.Option(T.patience),
          ema: float = typer.Option(T.ema, help="round 2: validate and keep a moving average of the weights, decay per step (e.g. 0.998; 0: off)"),
          sam: float = typer.Option(T.sam, help="round 2: sharpness-aware steps (SAM), neighbourhood radius rho (e.g. 0.05; 0: off; twice the compute a step)"),
          label_smoothing: float = typer.Option(T.label_smoothing, help="share of each target spread over the other classes (0: none; it caps the top probability)"),
          balance: str = typer.Option(T.balance, help="sampling: source (each source an equal share) or pair (each source's class an equal share)"),
          max_per_class: int = typer.Option(T.max_per_class, help="cap train/val images per source and class (quick runs)"),
          val_fraction: float = typer.Option(T.val_fraction, help="share of each source's TRAIN groups for validation (when a manifest is made)"),
          review_accuracy: float = typer.Option(T.review_accuracy, help="unflagged validation images must be this accurate (sets the review threshold)"),
          colour: float = typer.Option(T.augment.colour, help="brightness, contrast and saturation augmentation: each factor drawn from 1 +- this"),
          gamma: str = typer.Option(",".join(map(str, T.augment.gamma)), help="gamma augmentation: the range a view's tone curve is drawn from, LOW,HIGH"),
          cast: float = typer.Option(T.augment.cast, help="colour-cast augmentation: each channel's gain drawn from 1 +- this (another lamp or camera)"),
          background: float = typer.Option(T.augment.background, help="share of training views given a new background tone (greyer, darker, tinted) under the cell"),
          tight_crop: float = typer.Option(T.augment.tight, help="share of training views cut tight around the cell, black outside (an analyser's crop)"),
          transfer: float = typer.Option(T.augment.transfer, help="share of training images moved into another lab's light and stain (L*a*b* statistics drawn from the sources' span)"),
          seed: int = typer.Option(T.seed), workers: Optional[int] = typer.Option(None, help="data-loading processes (default: one per core beyond the first, at most 4)"),
          device: str = typer.Option(T.device), resume: bool = typer.Option(False, help="continue the run in --out")):
    """Two-round transfer learning on one or more sources, early stopping on group-disjoint validation."""
    try:
        head_sizes = tuple(int(x) for x in head.split(",") if x.strip())
    except ValueError:
        raise WbcError(f"--head must be comma-separated integers like 1024,512,128,64, not '{head}'") from None
    options = {k: v for k, v in locals().items() if k in TrainConfig.__dataclass_fields__ and k not in ("data", "manifest", "head", "out", "workers")}
    from wbc.data.locate import resolve_data

    cfg = TrainConfig(data=[] if resume else (data or [resolve_data(None)]), manifest=manifest or [], out=str(out), head=head_sizes, **options)
    if workers is not None:
        cfg.workers = workers
    cfg.augment.cast, cfg.augment.background, cfg.augment.tight, cfg.augment.transfer = cast, background, tight_crop, transfer
    cfg.augment.colour, cfg.augment.gamma = colour, _range(gamma, "--gamma")
    cfg.check(resume)  # before PyTorch loads: a bad option answers at once
    from wbc.training.train import train as run_train

    with bar() as progress:
        run_train(cfg, resume=resume, progress=progress)


def _range(text: str, option: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise WbcError(f"{option} must be two numbers LOW,HIGH like 0.75,1.35, not '{text}'") from None
    return low, high


@app.command(rich_help_panel=MAKE)
def adapt(images: str = typer.Argument(..., help="folder of your microscope's single-cell images (unlabelled, 50 or more)"),
          out: Path = typer.Option(..., "--out", "-o", help="adapted model file to write (.safetensors)"), model: Optional[str] = ModelOpt,
          labelled: Optional[str] = typer.Option(None, help="folder per class of a few labelled cells (e.g. 10 a class): also fine-tune"),
          heldout: Optional[str] = typer.Option(None, help="folder per class of labelled cells used only to print before/after figures"),
          px_per_um: float = typer.Option(0.0, help="pixels a micrometre of your camera (0: measured from the red cells)"),
          epochs: int = typer.Option(15, help="fine-tuning epochs over the --labelled cells"),
          bn_stats: str = typer.Option("auto", help="normalisation statistics: target (re-estimate on your images), keep, or auto "
                                                    "(target unless the model was fine-tuned with frozen statistics)")):
    """Adapt a model to a new microscope: its scale and normalisation statistics from unlabelled images, optionally a few labels."""
    check_ranges(("--px-per-um", px_per_um, px_per_um >= 0, "at least 0 (0: measured from the red cells)"), ("--epochs", epochs, epochs >= 0, "at least 0"))
    missing = [f"{f} ({what})" for what, f in (("images", images), ("--labelled", labelled), ("--heldout", heldout)) if f and not Path(f).is_dir()]
    if missing:  # said before torch and the model load (seconds)
        raise WbcError(f"no such folder: {', '.join(missing)}: check the path")
    from wbc.infer.predictor import shipped_model_path
    from wbc.training.adapt import AdaptConfig
    from wbc.training.adapt import adapt as run_adapt

    with console.status("adapting"):
        r = run_adapt(model or shipped_model_path(), images, out, AdaptConfig(px_per_um=px_per_um, labelled_epochs=epochs, bn_stats=bn_stats),
                      labelled, heldout)
    b = r["batchnorm"]
    console.print((f"re-estimated batch-norm statistics on {b['re_estimated_on']} images" if b["statistics"] == "target"
                   else f"batch-norm statistics kept ({b['why']})") + f"; scale {r['scale']['px_per_um']:.2f} px/um"
                  + (f"; fine-tuned on {r['labelled']['images']} labelled cells" if "labelled" in r else ""), highlight=False)
    if "heldout_after" in r:
        t = table(f"held-out {heldout}: {r['heldout_after']['images']} images",
                  ["model", "accuracy (all classes)", "accuracy (its classes)", "balanced"], left=("model",))
        for name, key in (("before", "heldout_before"), ("after", "heldout_after")):
            f = r[key]
            t.add_row(name, f"{f['accuracy']:.4f}", f"{f['accuracy_in_set_classes']:.4f}", f"{f['balanced_accuracy']:.4f}")
        console.print(t)
    console.print(f"adapted model written to {out}", markup=False)


