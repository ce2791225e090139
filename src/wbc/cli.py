"""The `wbc` command: one thin function per verb; the work lives in the modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
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


@data_app.command("scale")
def data_scale(paths: list[str] = typer.Argument(..., help="dataset folders, image folders or images"),
               sample: int = typer.Option(120, help="images measured per folder (evenly spread)")):
    """Pixels a micrometre, measured from the red cells: median and spread per folder."""
    from wbc.data.collect import collect_images
    from wbc.data.scale import source_scale

    t = Table(title="scale from red cells (RBC diameter 7.5 um)")
    for col in ("images", "measured", "px/um median", "5th-95th pct"):
        t.add_column(col, justify="left" if col == "images" else "right")
    for p in paths:
        files = collect_images([p]).files
        if not files:
            raise WbcError(f"no images in {p}")
        s = source_scale(files, sample)
        t.add_row(p, f"{s['found']}/{s['images']}", f"{s['px_per_um']:.2f}" if s["px_per_um"] else "-",
                  f"{s['p5']:.2f}-{s['p95']:.2f}" if s["px_per_um"] else "no red cells found")
    console.print(t)


@data_app.command("download")
def data_download(dest: Path = typer.Option(Path("data"), help="folder to put the dataset in")):
    """Fetch the public mirror of the Kaggle blood-cells data (checksum-verified) when online."""
    from wbc.data.download import download

    console.print(f"dataset ready at {download(dest)}")


@app.command()
def train(data: Optional[list[str]] = typer.Option(None, "--data", help="training source, NAME=DIR (repeat for several: --data kaggle=DIR --data pbc=DIR); "
                                                   "default: $WBC_DATA or ../shared/data/blood-cells"),
          manifest: Optional[list[str]] = typer.Option(None, help="a source's split manifest, NAME=FILE (made in the run when absent)"),
          out: Path = typer.Option(Path("runs/train"), help="run folder"), backbone: str = typer.Option("tf_efficientnet_lite0", help="timm model name (xception: the reference design)"),
          pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="start from ImageNet weights"),
          size: int = typer.Option(128, help="model input side (pixels)"), field_um: float = typer.Option(24.0, help="width of the view around the cell, micrometres"),
          head: str = typer.Option("1024,512,128,64", help="dense layer sizes"),
          dropout: float = typer.Option(0.3), batch_size: int = typer.Option(32), round1_epochs: int = typer.Option(60), round1_lr: float = typer.Option(1e-3),
          round2_epochs: int = typer.Option(8), round2_lr: float = typer.Option(1e-4), train_stages: int = typer.Option(-1, help="backbone stages trained in round 2 (-1: all)"),
          bn: str = typer.Option("train", help="round-2 batch-norm statistics: train (updated) or frozen"),
          epoch_size: int = typer.Option(0, help="images per round-2 epoch, source- and class-balanced (0: the train split's size)"), patience: int = typer.Option(3),
          balance: str = typer.Option("source", help="sampling: source (each source an equal share) or pair (each source's class an equal share)"),
          max_per_class: int = typer.Option(0, help="cap train/val images per source and class (quick runs)"),
          val_fraction: float = typer.Option(0.2, help="share of each source's TRAIN groups for validation (when a manifest is made)"),
          review_accuracy: float = typer.Option(0.98, help="unflagged validation images must be this accurate (sets the review threshold)"),
          seed: int = typer.Option(0), workers: Optional[int] = typer.Option(None), device: str = typer.Option("auto"), resume: bool = typer.Option(False, help="continue the run in --out")):
    """Two-round transfer learning on one or more sources, early stopping on group-disjoint validation."""
    from wbc.config import TrainConfig
    from wbc.data.locate import resolve_data
    from wbc.train import train as run_train

    try:
        head_sizes = tuple(int(x) for x in head.split(",") if x.strip())
    except ValueError:
        raise WbcError(f"--head must be comma-separated integers like 1024,512,128,64, not '{head}'") from None
    sources = [] if resume else (data or [resolve_data(None)])
    cfg = TrainConfig(data=sources, manifest=manifest or [], out=str(out), backbone=backbone, pretrained=pretrained, size=size, field_um=field_um,
                      head=head_sizes, dropout=dropout, batch_size=batch_size, round1_epochs=round1_epochs, round1_lr=round1_lr,
                      round2_epochs=round2_epochs, round2_lr=round2_lr, train_stages=train_stages, bn=bn, epoch_size=epoch_size, balance=balance,
                      patience=patience, max_per_class=max_per_class, val_fraction=val_fraction, review_accuracy=review_accuracy,
                      seed=seed, device=device)
    if workers is not None:
        cfg.workers = workers
    run_train(cfg, resume=resume)


def _print_eval(r: dict) -> None:
    n_model, n_set = len(r["confusion_matrix"]["columns"]), len(r["classes_in_set"])
    restricted = f" ({r['accuracy_in_set_classes']:.4f} restricted to its {n_set} classes)" if n_set < n_model else ""
    t = Table(title=f"{r['split']}: {r['images']} images, accuracy {r['accuracy']:.4f} over the model's {n_model} classes{restricted}, "
                    f"balanced {r['balanced_accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}")
    for col in ("class", "precision", "recall", "F1", "support"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for c, m in r["per_class"].items():
        t.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(t)
    ps = r.get("per_source_cell")
    if ps:
        console.print(f"per source cell ({ps['n_sources']} cells): mean accuracy {ps['mean_accuracy_per_source']:.4f} "
                      f"[95% CI {ps['ci95'][0]:.3f}-{ps['ci95'][1]:.3f}], majority vote {ps['majority_vote_accuracy']:.4f}")
    rv = r["review"]
    rest = f"; the other {r['images'] - rv['flagged']} are {rv['accuracy_unflagged']:.1%} right" if rv["accuracy_unflagged"] is not None else ""
    console.print(f"ECE {r['ece']:.4f}; {rv['flagged']} images ({rv['flagged_share']:.1%}) flagged for review (top probability < {rv['threshold']:.3f}){rest}; "
                  f"no white cell found in {r['no_white_cell']}; scale {r['scale']['px_per_um_median']:.2f} px/um "
                  f"(measured on {r['scale']['measured']}, assumed on {r['scale']['assumed']})", highlight=False)


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


def _label(p) -> str:
    return "no white cell found" if not p.to_dict()["white_cell"] else p.label


def _parse_scale(value: Optional[str]):
    """--px-per-um: None (measure each image), 'auto' (measure a sample once) or a positive number."""
    if value is None or value == "auto":
        return value
    try:
        v = float(value)
    except ValueError:
        raise WbcError(f"--px-per-um must be a number or 'auto', not '{value}'") from None
    if v <= 0:
        raise WbcError(f"--px-per-um must be positive, not {value}")
    return v


def _engine_for(predictor, engine: str, n_files: int):
    """auto: ONNX Runtime for collections (>= 200 files: its export pays back), PyTorch for a few images."""
    from wbc.predict import fastest

    return fastest(predictor) if engine in ("onnx", "ray") or (engine == "auto" and n_files >= 200) else predictor


@app.command()
def predict(inputs: list[str] = typer.Argument(..., help="single-cell images, folders (searched recursively) or globs ('cells/**/*.png')"),
            model: Optional[str] = ModelOpt,
            format: Optional[str] = typer.Option(None, "--format", "-f", help="table, csv, jsonl or json (default: table on a terminal, csv with --out)"),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="stream results to this CSV, JSON Lines (.jsonl) or Parquet (.parquet) file"),
            resume: bool = typer.Option(False, help="continue an interrupted run into --out, skipping files already there"),
            px_per_um: Optional[str] = typer.Option(None, help="pixels a micrometre of the images (default: measured in each image from its red cells); "
                                                   "'auto': measured once on 50 of them (one microscope: ~3x faster)"),
            engine: str = typer.Option("auto", help="auto, pytorch, onnx, or ray (the same job on a Ray cluster)"),
            address: Optional[str] = typer.Option(None, help="Ray cluster address (with --engine ray; default: a local Ray)"),
            workers: Optional[int] = typer.Option(None, help="decoder processes (default: one per core beyond the first)"),
            batch_size: int = typer.Option(32)):
    """Class, probabilities and a review flag for every image ("no white cell found" when there is none).
    Unreadable files are reported and skipped; the exit status is 1 when any file failed."""
    from wbc.batch import ResultWriter, default_workers, format_of, run_collection
    from wbc.data.collect import collect_images
    from wbc.progress import bar

    fmt = format or (format_of(out, None) if out else "table")
    if fmt not in ("table", "csv", "jsonl", "json", "parquet"):
        raise WbcError(f"--format must be table, csv, jsonl, json or parquet, not '{fmt}'")
    if fmt == "parquet" and not out:
        raise WbcError("parquet needs --out FILE.parquet")
    scale = _parse_scale(px_per_um)
    if resume and not out:
        raise WbcError("--resume continues a run written with --out FILE: pass the same --out")
    if out and fmt in ("table", "json"):
        raise WbcError(f"--out streams csv, jsonl or parquet, not {fmt}")
    if engine not in ("auto", "pytorch", "onnx", "ray"):
        raise WbcError(f"--engine must be auto, pytorch, onnx or ray, not '{engine}'")
    from wbc.predict import load_model

    native = load_model(model)  # a bad model file is said before any image is looked at
    found = collect_images(inputs)
    if not found.files:
        raise WbcError("; ".join(f"{p}: {why}" for p, why in found.problems) or "no images to classify")
    if scale == "auto":
        from wbc.data.scale import source_scale

        s = source_scale(found.files, sample=50)
        if not s["px_per_um"]:
            raise WbcError("--px-per-um auto: no red cells measurable in 50 of the images; pass the number")
        scale = s["px_per_um"]
        console.print(f"scale {scale:.2f} px/um (median of {s['found']} images, 5th-95th percentile {s['p5']:.2f}-{s['p95']:.2f})", highlight=False)
    predictor = _engine_for(native, engine, len(found.files))
    classes = predictor.classes
    rows, writer = [], None
    if out:
        writer = ResultWriter(out, format_of(out, fmt), classes, resume)
        sink = writer.write
    elif fmt in ("csv", "jsonl"):
        stdout_writer = _StdoutRows(fmt, classes)
        sink = stdout_writer.write
    else:
        sink = rows.extend
    stream = None
    if engine == "ray":
        from wbc.distributed import ray_stream

        stream = ray_stream(address)
    n_workers = default_workers() if workers is None else workers
    try:
        with bar(transient=True) as p:
            task = p.add_task("classifying", total=len(found.files))
            summary = run_collection(predictor, found.files, sink, writer.done if writer else None, batch_size, n_workers, scale,
                                     lambda n: p.advance(task, n), stream)
    finally:
        if writer:
            writer.close()
    if fmt == "json":
        print(json.dumps([o.prediction.to_dict() if o.prediction else {"source": o.path, "error": o.error} for o in rows], indent=2))
    elif fmt == "table":
        t = Table()
        for col in ("image", "class", "p", *[c[:5] for c in classes], "review", "px/um"):
            t.add_column(col)
        for o in rows:
            q = o.prediction
            if q is None:
                t.add_row(o.path, "[red]unreadable[/red]", "", *[""] * len(classes), "", "")
                continue
            t.add_row(q.source, _label(q), f"{q.probability:.3f}", *[f"{q.probabilities[c]:.3f}" for c in classes], "REVIEW" if q.review else "",
                      f"{q.px_per_um:.1f}" + ("?" if q.scale == "assumed" else ""))
        console.print(t)
    failures = [*found.problems, *summary.failures]
    for path, why in failures[:20]:
        console.print(f"[red]skipped[/red] {why if path in why else f'{path}: {why}'}", highlight=False, soft_wrap=True)
    if len(failures) > 20:
        console.print(f"... and {len(failures) - 20} more (see the error column{' of ' + str(out) if out else ''})")
    if out or summary.done + len(failures) > 1:
        counts = ", ".join(f"{('no white cell' if k == 'NO_WHITE_CELL' else k)} {v}" for k, v in summary.labels.most_common())
        console.print(f"{summary.done} classified, {len(failures)} failed" + (f", {summary.skipped} already in {out}" if summary.skipped else "")
                      + (f"; {counts}" if counts else "") + (f"; results in {out}" if out else ""), highlight=False)
    if failures:
        raise typer.Exit(1)


class _StdoutRows:
    """csv / jsonl rows to stdout as they come (a pipe sees them at once)."""

    def __init__(self, fmt: str, classes: list[str]):
        import csv

        from wbc.batch import columns

        self.fmt, self.classes = fmt, classes
        if fmt == "csv":
            self.w = csv.DictWriter(sys.stdout, columns(classes))
            self.w.writeheader()

    def write(self, outcomes) -> None:
        from wbc.batch import row_of

        for o in outcomes:
            r = row_of(o, self.classes)
            if self.fmt == "csv":
                self.w.writerow(r)
            else:
                print(json.dumps(r))
        sys.stdout.flush()


@app.command()
def adapt(images: str = typer.Argument(..., help="folder of your microscope's single-cell images (unlabelled, 50 or more)"),
          out: Path = typer.Option(..., "--out", "-o", help="adapted model file to write (.safetensors)"), model: Optional[str] = ModelOpt,
          labelled: Optional[str] = typer.Option(None, help="folder per class of a few labelled cells (e.g. 10 a class): also fine-tune"),
          heldout: Optional[str] = typer.Option(None, help="folder per class of labelled cells used only to print before/after figures"),
          px_per_um: float = typer.Option(0.0, help="pixels a micrometre of your camera (0: measured from the red cells)"),
          epochs: int = typer.Option(15, help="fine-tuning epochs over the --labelled cells"),
          bn_stats: str = typer.Option("auto", help="normalisation statistics: target (re-estimate on your images), keep, or auto "
                                                    "(target unless the model was fine-tuned with frozen statistics)")):
    """Adapt a model to a new microscope: its scale and normalisation statistics from unlabelled images, optionally a few labels."""
    from wbc.adapt import AdaptConfig
    from wbc.adapt import adapt as run_adapt
    from wbc.predict import shipped_model_path

    if px_per_um < 0:
        raise WbcError(f"--px-per-um must be positive, not {px_per_um}")
    with console.status("adapting"):
        r = run_adapt(model or shipped_model_path(), images, out, AdaptConfig(px_per_um=px_per_um, labelled_epochs=epochs, bn_stats=bn_stats),
                      labelled, heldout)
    b = r["batchnorm"]
    console.print((f"re-estimated batch-norm statistics on {b['re_estimated_on']} images" if b["statistics"] == "target"
                   else f"batch-norm statistics kept ({b['why']})") + f"; scale {r['scale']['px_per_um']:.2f} px/um"
                  + (f"; fine-tuned on {r['labelled']['images']} labelled cells" if "labelled" in r else ""), highlight=False)
    if "heldout_after" in r:
        t = Table(title=f"held-out {heldout}: {r['heldout_after']['images']} images")
        for col in ("model", "accuracy (all classes)", "accuracy (its classes)", "balanced"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for name, key in (("before", "heldout_before"), ("after", "heldout_after")):
            f = r[key]
            t.add_row(name, f"{f['accuracy']:.4f}", f"{f['accuracy_in_set_classes']:.4f}", f"{f['balanced_accuracy']:.4f}")
        console.print(t)
    console.print(f"adapted model written to {out}")


@app.command()
def export(out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (.onnx)"), model: Optional[str] = ModelOpt,
           int8: bool = typer.Option(False, "--int8", help="static int8 quantisation, calibrated on TRAIN images"),
           data: Optional[str] = DataOpt, check_split: str = typer.Option("TEST", help="split whose images check the export against PyTorch"),
           check_max: int = typer.Option(256, help="check at most this many images (0: the whole split)"),
           calibration: int = typer.Option(64, help="TRAIN images a class to calibrate int8 on")):
    """Export the model to ONNX (uint8 pixels in, probabilities out) and check it against PyTorch on real images."""
    from wbc.data.locate import resolve_data
    from wbc.evaluate import match_classes
    from wbc.export import calibration_images, compare, export_onnx
    from wbc.predict import load_model
    from wbc.progress import bar

    native = load_model(model)
    data_root = resolve_data(data)
    calib = calibration_images(data_root, calibration) if int8 else None
    with console.status("exporting" + (f" and calibrating int8 on {len(calib)} TRAIN images" if int8 else "")):
        export_onnx(native, out, int8=int8, calibration=calib)
    exported = load_model(out)
    lab = match_classes(data_root, check_split, native.classes, ignore_unknown=True)
    idx = np.arange(len(lab.paths)) if not check_max or check_max >= len(lab.paths) else np.linspace(0, len(lab.paths) - 1, check_max).astype(int)
    with bar() as p:
        task = p.add_task(f"checking on {check_split}", total=len(idx))
        a = compare(native, exported, [lab.paths[i] for i in idx], [int(lab.y[i]) for i in idx], lambda n: p.advance(task, n))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {exported.engine.name})")
    console.print(f"checked on {a.images} {check_split} images: max |p_onnx - p_torch| = {a.max_abs_diff:.2e}, "
                  f"same top class {a.same_top_class:.2%}, accuracy PyTorch {a.accuracy_native:.4f} vs ONNX {a.accuracy_exported:.4f}", highlight=False)


@app.command()
def bench(model: Optional[str] = ModelOpt, images: Optional[Path] = typer.Option(None, help="folder of cell images (default: the TEST split of --data)"),
          data: Optional[str] = DataOpt, seconds: float = typer.Option(5.0, help="seconds per measurement"),
          threads: int = typer.Option(0, help="CPU threads for every row (0: all cores)"), max_images: int = typer.Option(256),
          folder_files: int = typer.Option(1024, help="files in each folder-run row (the images, repeated)"),
          json_out: Path = typer.Option(Path("reports/bench.json"), "--json", help="write the figures here")):
    """Time the reference Xception, the model in PyTorch, ONNX fp32 and ONNX int8 on the same images and threads."""
    import os

    from wbc.bench import bench as run_bench
    from wbc.data.locate import resolve_data
    from wbc.data.scan import IMAGE_EXTENSIONS, scan
    from wbc.io_utils import atomic_write_text
    from wbc.progress import bar

    try:
        data_root = resolve_data(data)
    except WbcError:
        if not images:
            raise
        data_root = None  # int8 calibration then uses the benchmark images themselves (speed only)
    if images:
        if not images.is_dir():
            raise WbcError(f"--images {images} is not a folder of images")
        files = sorted(str(f) for f in images.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = sorted(str(r.path) for r in scan(data_root, check=False).split("TEST"))
    if not files:
        raise WbcError(f"no images found in {images or data_root}: pass --images DIR")
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(max_images, len(files))).astype(int)]
    threads = threads or os.cpu_count() or 1
    with bar() as p:
        r = run_bench(model, files, seconds, threads, data_root, progress=p, folder_files=folder_files)
    m = r["machine"]
    t = Table(title=f"{len(files)} images, {threads} threads, {m['cpu']} ({m['cores']} cores)")
    for col in ("path", "input", "params", "b1 img/s", "p50 ms", "p99 ms", "b32 img/s", "xXcep", "files/s", "RSS MB"):
        t.add_column(col, justify="left" if col in ("path", "input") else "right")
    for row in r["inference"]:
        t.add_row(row["path"], row["input"], f"{row['parameters'] / 1e6:.1f}M" if row["parameters"] else "-", f"{row['batch1_images_per_s']:.1f}",
                  f"{row['batch1_p50_ms']:.1f}", f"{row['batch1_p99_ms']:.1f}", f"{row['batch32_images_per_s']:.1f}",
                  f"{row['batch32_vs_xception']:.1f}", f"{row['end_to_end_files_per_s']:.1f}", f"{row['peak_rss_mb']:.0f}")
    console.print(t)
    console.print("b1/b32: batch 1/32 on decoded images; p50/p99: batch-1 latency; xXcep: b32 img/s over Xception's; "
                  "files/s: end to end from JPEG files (decode, framing, batch 32); RSS: peak of the row's own process")
    for row in r["folder"]:
        console.print(f"{row['path']}: {row['files_per_s']:.1f} files/s over {row['files']} files "
                      f"({row['vs_onnx_fp32_batch32']:.0%} of ONNX fp32 b32), peak RSS {row['peak_rss_mb']:.0f} MB", highlight=False)
    for row in r["training"]:
        console.print(f"{row['path']}: {row['seconds_per_batch32']:.2f} s per batch of 32, ~{row['minutes_per_epoch']:.1f} min per "
                      f"7,889-image epoch, peak RSS {row['peak_rss_mb']:.0f} MB", highlight=False)
    atomic_write_text(json_out, json.dumps(r, indent=2))
    console.print(f"figures written to {json_out}")


@app.command()
def serve(model: Optional[str] = ModelOpt, host: str = typer.Option("127.0.0.1", help="address to listen on"), port: int = typer.Option(8000),
          engine: str = typer.Option("auto", help="auto (ONNX Runtime when installed), onnx or pytorch"),
          max_files: int = typer.Option(50, help="images a request"), max_mb: float = typer.Option(10.0, help="MB an uploaded image"),
          threads: int = typer.Option(0, help="CPU threads for inference (0: all cores)"),
          queue: int = typer.Option(32, help="requests classifying or waiting; beyond it the server answers 503 with Retry-After"),
          timeout: float = typer.Option(120.0, help="seconds a request may run before it gets 504")):
    """Web page and HTTP API (POST /api/v1/classify, GET /api/v1/model, /healthz, /readyz; docs at /docs)."""
    from wbc.serve.server import serve as run_serve

    if queue < 1 or timeout <= 0:
        raise WbcError("--queue must be at least 1 and --timeout positive")
    run_serve(model, host, port, engine, max_files, max_mb, threads or None, queue, timeout)


def _diff_table(title: str, rows: list[dict]) -> Table:
    t = Table(title=title)
    for col in ("class", "count", "%", "95% CI (Wilson)"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for r in rows:
        if not r["in_model"]:
            t.add_row(r["class"], "-", "-", "not a class of this model")
        else:
            ci = f"{r['ci95'][0]:.1f}-{r['ci95'][1]:.1f}" if r["ci95"] else "-"
            t.add_row(r["class"], str(r["count"]), f"{r['percent']:.1f}" if r["percent"] is not None else "-", ci)
    return t


@app.command()
def count(images: list[str] = typer.Argument(..., help="smear field images, folders or globs (e.g. BCCD 640x480 JPEGs)"), model: Optional[str] = ModelOpt,
          out: Optional[Path] = typer.Option(None, help="folder for annotated PNGs (one per image)"),
          format: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
          px_per_um: float = typer.Option(14.0, help="pixels a micrometre of the images (BCCD 640x480: 14); other magnifications are rescaled to it"),
          detector: Optional[str] = typer.Option(None, help="learned (default when installed), classic, or a detector file (.safetensors/.onnx)")):
    """Find and count RBCs, WBCs and platelets in smear fields of any size; classify each WBC; report the differential."""
    from wbc.count.count import COUNT_MAX_PIXELS, count_field, differential, save_annotated
    from wbc.data.framing import decode
    from wbc.predict import fastest, load_model

    if format not in ("table", "csv", "json"):
        raise WbcError(f"--format must be table, csv or json, not '{format}'")
    from wbc.data.collect import collect_images

    found = collect_images(images)
    if not found.files:
        raise WbcError("; ".join(f"{p}: {why}" for p, why in found.problems) or "no images to count")
    from wbc.count.detector import default_detector

    if px_per_um <= 0:
        raise WbcError(f"--px-per-um must be positive, not {px_per_um}")
    predictor = fastest(load_model(model))
    det = default_detector(detector)
    fields, failures = [], list(found.problems)
    for img in found.files:
        try:
            fc = count_field(predictor, img, px_per_um, name=img, detector=det)
        except WbcError as e:
            failures.append((img, str(e)))
            console.print(f"[red]skipped[/red] {e}", highlight=False, soft_wrap=True)
            continue
        if not fc.boxes:
            console.print(f"[yellow]no cells found in {img}[/yellow]: is it a blood smear field at about {px_per_um:g} px/um? (see --px-per-um)", highlight=False)
        if out:
            fc.annotated = str(save_annotated(decode(img, max_pixels=COUNT_MAX_PIXELS), fc, out))
        fields.append(fc)
    labels = [w["class"] for fc in fields for w in fc.wbc]
    diff = differential(labels, predictor.classes)
    totals = {k: sum(fc.counts[k] for fc in fields) for k in ("RBC", "WBC", "Platelets")}
    if format == "json":
        print(json.dumps({"images": [fc.to_dict() | ({"annotated": fc.annotated} if out else {}) for fc in fields],
                          "totals": totals, "differential": diff, "failed": [{"image": p, "error": e} for p, e in failures]}, indent=2))
    elif format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["image", "type", "x0", "y0", "x1", "y1", "class", "probability", "review"])
        for fc in fields:
            for c in fc.boxes:
                if c.kind != "WBC":
                    w.writerow([fc.source, c.kind, f"{c.x0:.0f}", f"{c.y0:.0f}", f"{c.x1:.0f}", f"{c.y1:.0f}", "", "", ""])
            for wd in fc.wbc:
                w.writerow([fc.source, "WBC", *[f"{v:.0f}" for v in wd["box"]], wd["class"], f"{wd['probability']:.4f}", int(wd["review"])])
    else:
        t = Table(title="cells per field")
        for col in ("image", "RBC", "WBC", "platelets", "WBC classes"):
            t.add_column(col)
        for fc in fields:
            c = fc.counts
            t.add_row(Path(fc.source).name, str(c["RBC"]), str(c["WBC"]), str(c["Platelets"]),
                      ", ".join(f"{w['class']} {w['probability']:.2f}" + (" (review)" if w["review"] else "") for w in fc.wbc) or "-")
        if len(fields) > 1:
            t.add_row("total", str(totals["RBC"]), str(totals["WBC"]), str(totals["Platelets"]), "")
        console.print(t)
        console.print(_diff_table(f"WBC differential ({len(labels)} WBC)", diff))
        if out:
            console.print(f"annotated images in {out}")
    if failures:
        console.print(f"{len(fields)} fields counted, {len(failures)} failed", highlight=False)
        raise typer.Exit(1)


@app.command("train-detector")
def train_detector(data: Optional[str] = typer.Option(None, "--data", help="BCCD in Pascal VOC form (default: $WBC_BCCD or ../shared/data/bccd)"),
                   out: Path = typer.Option(Path("runs/detector"), help="run folder"), epochs: int = typer.Option(60),
                   batch_size: int = typer.Option(16), crop: int = typer.Option(256, help="training crop side at the detector's 7 px/um"),
                   lr: float = typer.Option(1e-3), patience: int = typer.Option(10, help="epochs without a better val mAP@0.5 before stopping"),
                   ignore_unlabelled: bool = typer.Option(True, "--ignore-unlabelled/--penalise-unlabelled",
                                                          help="no loss where the classic detector finds a cell no box covers"),
                   max_images: int = typer.Option(0, help="use at most this many fields a list (quick runs)"),
                   pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained"), workers: int = typer.Option(0),
                   seed: int = typer.Option(0), resume: bool = typer.Option(False, help="continue the run in --out")):
    """Train the CenterNet cell detector (RBC, WBC, platelets) on BCCD train, early stopping on val mAP@0.5."""
    from wbc.count.train_detector import DetectorConfig
    from wbc.count.train_detector import train_detector as run
    from wbc.data.locate import resolve_bccd

    cfg = DetectorConfig(data="" if resume else resolve_bccd(data), out=str(out), epochs=epochs, batch_size=batch_size, crop=crop, lr=lr,
                         patience=patience, ignore_unlabelled=ignore_unlabelled, max_images=max_images, pretrained=pretrained,
                         workers=workers, seed=seed)
    run(cfg, resume=resume)


@app.command("export-detector")
def export_detector_cmd(out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (.onnx)"),
                        detector: Optional[str] = typer.Option(None, help="detector file (default: the shipped one)")):
    """Export the cell detector to ONNX (uint8 pixels in, peaks/sizes/offsets out, any field size); `wbc count --detector FILE.onnx` runs it."""
    from wbc.count.detector import Detector, export_detector, shipped_detector_path

    src = Path(detector) if detector else shipped_detector_path()
    with console.status("exporting"):
        export_detector(src, out)
    d = Detector(out)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {d.engine}, classes {', '.join(d.spec.classes)})")


@app.command("evaluate-count")
def evaluate_count(data: Optional[str] = typer.Option(None, "--data", help="BCCD in Pascal VOC form (default: $WBC_BCCD or ../shared/data/bccd)"),
                   split: str = typer.Option("test", help="ImageSets/Main list to evaluate on"), model: Optional[str] = ModelOpt,
                   labels: Optional[str] = typer.Option(None, help="dataset-master/labels.csv (default: from the blood-cells data when found)"),
                   json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures here"),
                   detector: Optional[str] = typer.Option(None, help="learned (default when installed), classic, or a detector file")):
    """Detection AP@0.5 and AP@[.5:.95] per type, precision/recall and count error, WBC class accuracy on a BCCD list."""
    from wbc.count.evaluate import evaluate_count as run
    from wbc.data.locate import resolve_bccd, resolve_data
    from wbc.io_utils import atomic_write_text
    from wbc.predict import fastest, load_model
    from wbc.progress import bar

    root = resolve_bccd(data)
    test_simple = None
    if labels is None:
        try:
            blood = Path(resolve_data(None))
            cand = blood / "dataset-master" / "labels.csv"
            labels = str(cand) if cand.is_file() else None
            test_simple = blood / "dataset2-master" / "images" / "TEST_SIMPLE"
        except WbcError:
            pass
    from wbc.count.detector import default_detector

    predictor = fastest(load_model(model))
    with bar() as p:
        r = run(predictor, root, split, labels, test_simple, progress=p, detector=default_detector(detector))
    t = Table(title=f"BCCD {split}, {r['detector']} detector: {r['images']} images, {1 / r['seconds_per_image']:.1f} images/s, "
                    f"mAP@0.5 {r['map50']:.3f}, mAP@[.5:.95] {r['map50_95']:.3f}")
    for col in ("type", "boxes", "counted", "precision", "recall", "AP@0.5", "AP@[.5:.95]", "count MAE", "count bias"):
        t.add_column(col, justify="left" if col == "type" else "right")
    for k, d in r["detection"].items():
        t.add_row(k, str(d["truth_boxes"]), str(d["counted"]), f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['ap50']:.3f}",
                  f"{d['ap50_95']:.3f}", f"{d['count_mae']:.2f}", f"{d['count_bias']:+.2f}")
    console.print(t)
    for name, a in r["anchors"].items():
        console.print(f"public anchor, {name}: WBC {a['WBC']:.3f}, overall {a['overall']:.3f}")
    wc = r.get("wbc_class")
    if wc:
        for key, text in (("all_single_label", "all single-label images"), ("held_out_originals", "held-out originals (Kaggle TEST, never trained on)")):
            a = wc[key]
            acc = f"{a['accuracy']:.3f}" if a["accuracy"] is not None else "-"
            console.print(f"WBC class accuracy vs labels.csv, {text}: {acc} on {a['images']} images ({a['no_wbc_found']} with no WBC found)")
    if json_out:
        atomic_write_text(json_out, json.dumps(r, indent=2))
        console.print(f"figures written to {json_out}")


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
