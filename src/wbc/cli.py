"""The `wbc` command: one thin function per verb; the work lives in the modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from wbc.errors import WbcError
from wbc.progress import console

app = typer.Typer(help="White blood cell classification from blood-smear images.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Check, explore, split and download image sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataOpt = typer.Option(None, "--data", help="dataset folder (default: $WBC_DATA or ../shared/data/blood-cells)")
ModelOpt = typer.Option(None, "--model", "-m", help="model file (default: the shipped model)")


@data_app.command("check")
def data_check(path: Optional[str] = typer.Argument(None, help="dataset folder"), max_list: int = typer.Option(50, help="list at most this many bad files")):
    """Count images per split and class; list every unreadable, truncated, empty, non-image or odd-sized file."""
    from wbc.data.locate import resolve_data
    from wbc.data.scan import scan
    from wbc.progress import bar

    with bar(transient=True) as p:
        s = scan(resolve_data(path), progress=p)
    t = Table(title=f"{s.root}")
    t.add_column("split")
    for c in s.classes:
        t.add_column(c, justify="right")
    t.add_column("total", justify="right")
    for split, counts in sorted(s.counts().items()):
        t.add_row(split, *[str(counts.get(c, 0)) for c in s.classes], str(sum(counts.values())))
    console.print(t)
    for title, items in (("bad files (skipped everywhere)", s.bad), ("odd-sized files (used)", s.odd_size)):
        if items:
            console.print(f"[bold]{len(items)} {title}:[/bold]")
            for b in items[:max_list]:
                console.print(f"  {b.path}: {b.reason}", highlight=False)
            if len(items) > max_list:
                console.print(f"  ... and {len(items) - max_list} more")
    console.print(f"{len(s.records)} good images, {len(s.bad)} bad, {len(s.odd_size)} odd-sized")


@data_app.command("explore")
def data_explore(path: Optional[str] = typer.Argument(None, help="dataset folder"), out: Path = typer.Option(Path("reports/explore"), help="output folder"),
                 split: str = typer.Option("TRAIN", help="split to explore"), per_class: int = typer.Option(200, help="images a class for the histograms")):
    """Sample grids, grayscale histograms with data-derived thresholds, black-border fraction."""
    from wbc.data.explore import explore
    from wbc.data.locate import resolve_data

    report = explore(resolve_data(path), out, split=split, per_class=per_class)
    console.print(f"report written to {report}")


@data_app.command("split")
def data_split(data: Optional[str] = DataOpt, out: Path = typer.Option(Path("runs/split_manifest.csv"), help="manifest CSV to write"),
               val_fraction: float = typer.Option(0.2, help="share of TRAIN source groups held out for validation"),
               seed: int = typer.Option(0)):
    """Group augmented copies by source cell (from the pixels) and split TRAIN into train/val by group."""
    from wbc.data.locate import resolve_data
    from wbc.data.scan import scan
    from wbc.data.split import make_manifest, summary, write_manifest
    from wbc.progress import bar

    with bar() as p:
        rows = make_manifest(scan(resolve_data(data), progress=p), val_fraction, seed, progress=p)
    write_manifest(rows, out)
    table, crossing = summary(rows)
    t = Table(title="source groups / images per class and split")
    classes = sorted({r.label for r in rows})
    t.add_column("split")
    for c in classes:
        t.add_column(c, justify="right")
    for s in sorted(table):
        t.add_row(s, *[f"{table[s].get(c, (0, 0))[0]} / {table[s].get(c, (0, 0))[1]}" for c in classes])
    console.print(t)
    if crossing:
        console.print(f"[yellow]{len(crossing)} source group(s) appear in TRAIN and in another split:[/yellow] {', '.join(crossing)}")
    else:
        console.print("no source group appears in both TRAIN and another split")
    console.print(f"manifest written to {out}")


@data_app.command("download")
def data_download(dest: Path = typer.Option(Path("data"), help="folder to put the dataset in")):
    """Fetch the public mirror of the Kaggle blood-cells data (checksum-verified) when online."""
    from wbc.data.download import download

    console.print(f"dataset ready at {download(dest)}")


@app.command()
def train(data: Optional[str] = DataOpt, manifest: str = typer.Option("", help="split manifest (made when empty)"),
          out: Path = typer.Option(Path("runs/train"), help="run folder"), backbone: str = typer.Option("tf_efficientnet_lite0", help="timm model name (xception: the reference design)"),
          pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="start from ImageNet weights"),
          height: int = typer.Option(192), width: int = typer.Option(256), head: str = typer.Option("1024,512,128,64", help="dense layer sizes"),
          dropout: float = typer.Option(0.3), batch_size: int = typer.Option(32), round1_epochs: int = typer.Option(60), round1_lr: float = typer.Option(1e-3),
          round2_epochs: int = typer.Option(8), round2_lr: float = typer.Option(1e-4), train_stages: int = typer.Option(3, help="backbone stages trained in round 2 (-1: all)"),
          epoch_size: int = typer.Option(0, help="images per round-2 epoch (0: all)"), patience: int = typer.Option(3), max_per_class: int = typer.Option(0, help="cap train/val images a class (quick runs)"),
          val_fraction: float = typer.Option(0.2, help="share of TRAIN source groups for validation (when the manifest is made)"),
          seed: int = typer.Option(0), workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"), resume: bool = typer.Option(False, help="continue the run in --out")):
    """Two-round transfer learning with early stopping on a group-disjoint validation split."""
    from wbc.config import TrainConfig
    from wbc.data.locate import resolve_data
    from wbc.train import train as run_train

    try:
        head_sizes = tuple(int(x) for x in head.split(",") if x.strip())
    except ValueError:
        raise WbcError(f"--head must be comma-separated integers like 1024,512,128,64, not '{head}'") from None
    cfg = TrainConfig(data="" if resume else resolve_data(data), manifest=manifest, out=str(out), backbone=backbone, pretrained=pretrained,
                      input_size=(height, width), head=head_sizes, dropout=dropout, batch_size=batch_size, round1_epochs=round1_epochs,
                      round1_lr=round1_lr, round2_epochs=round2_epochs, round2_lr=round2_lr, train_stages=train_stages, epoch_size=epoch_size,
                      patience=patience, max_per_class=max_per_class, val_fraction=val_fraction, seed=seed, device=device)
    if workers is not None:
        cfg.workers = workers
    run_train(cfg, resume=resume)


def _print_eval(r: dict) -> None:
    t = Table(title=f"{r['split']}: {r['images']} images, accuracy {r['accuracy']:.4f}, balanced {r['balanced_accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}")
    for col in ("class", "precision", "recall", "F1", "support"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for c, m in r["per_class"].items():
        t.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(t)
    ps = r.get("per_source_cell")
    if ps:
        console.print(f"per source cell ({ps['n_sources']} cells): mean accuracy {ps['mean_accuracy_per_source']:.4f} "
                      f"[95% CI {ps['ci95'][0]:.3f}-{ps['ci95'][1]:.3f}], majority vote {ps['majority_vote_accuracy']:.4f}")
    console.print(f"ECE {r['ece']:.4f}; {r['review']['flagged']} images flagged for review (top probability < {r['review']['threshold']:.2f})")


@app.command()
def evaluate(model: Optional[str] = ModelOpt, data: Optional[str] = DataOpt, split: list[str] = typer.Option(["TEST"], help="split(s) to evaluate, e.g. TEST_SIMPLE, TEST"),
             json_out: Optional[Path] = typer.Option(None, "--json", help="write all metrics to this JSON file"),
             out: Optional[Path] = typer.Option(Path("reports/evaluate"), help="folder for report.md and PNGs (one sub-folder a split)"),
             manifest: Optional[str] = typer.Option(None, help="split manifest giving source cells (default: the model's own, if it matches)"),
             ignore_unknown: bool = typer.Option(False, help="skip class folders the model does not know")):
    """Accuracy, per-class P/R/F1, confusion matrix, misclassified gallery, calibration, per-source-cell accuracy."""
    from wbc.data.locate import resolve_data
    from wbc.evaluate import evaluate as run_eval
    from wbc.io_utils import atomic_write_text
    from wbc.predict import default_manifest, load_model

    predictor = load_model(model)
    data = resolve_data(data)
    manifest = manifest or default_manifest(predictor)
    results = {}
    for s in split:
        r = run_eval(predictor, data, s, out / s.upper() if out else None, ignore_unknown, manifest)
        _print_eval(r)
        results[s.upper()] = r
        if out:
            console.print(f"report: {out / s.upper() / 'report.md'}")
    if json_out:
        atomic_write_text(json_out, json.dumps(results, indent=2))
        console.print(f"metrics written to {json_out}")


@app.command()
def predict(paths: list[str] = typer.Argument(..., help="cell image files (framed like the 320x240 Kaggle crops)"), model: Optional[str] = ModelOpt,
            format: str = typer.Option("table", "--format", "-f", help="table, csv or json")):
    """Class, probability of each class and a review flag for each image."""
    from wbc.predict import load_model

    if format not in ("table", "csv", "json"):
        raise WbcError(f"--format must be table, csv or json, not '{format}'")
    predictor = load_model(model)
    preds = predictor.predict(paths)
    classes = predictor.classes
    if format == "json":
        print(json.dumps([p.to_dict() for p in preds], indent=2))
    elif format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["path", "class", "probability", *[f"p_{c}" for c in classes], "review"])
        for p in preds:
            w.writerow([p.source, p.label, f"{p.probability:.4f}", *[f"{p.probabilities[c]:.4f}" for c in classes], int(p.review)])
    else:
        t = Table()
        for col in ("image", "class", "p", *classes, "review"):
            t.add_column(col)
        for p in preds:
            t.add_row(p.source, p.label, f"{p.probability:.3f}", *[f"{p.probabilities[c]:.3f}" for c in classes], "REVIEW" if p.review else "")
        console.print(t)


def main() -> None:
    try:
        app()
    except WbcError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
