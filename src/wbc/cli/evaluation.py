"""`wbc evaluate`, `wbc export`, `wbc bench`: figures, the ONNX export checked, speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from wbc.cli import CHECK, MAKE, DataOpt, ModelOpt, app
from wbc.cli.render import bar, console, escape
from wbc.errors import WbcError, check_ranges


def _print_eval(r: dict) -> None:
    from wbc.evaluation.evaluate import why_flagged

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
    rest = f"; the {rv['unflagged_share']:.1%} left unflagged are {rv['accuracy_unflagged']:.1%} right" if rv["accuracy_unflagged"] is not None else ""
    console.print(f"as answered {rv['accuracy_as_answered']:.4f} (a cell answered \"no white cell found\" or UNIDENTIFIED counted wrong); "
                  f"ECE {r['ece']:.4f}; {rv['flagged']} images ({rv['flagged_share']:.1%}) flagged for review ({why_flagged(rv)}){rest}; "
                  f"UNIDENTIFIED {rv['unidentified']}; AURC {rv['risk_coverage']['aurc']:.4f}; "
                  f"no white cell found in {r['no_white_cell']}; scale {r['scale']['px_per_um_median']:.2f} px/um "
                  f"(measured on {r['scale']['measured']}, the run's on {r['scale'].get('run', 0) + r['scale'].get('corrected', 0)}, "
                  f"from the cell on {r['scale'].get('cell', 0)}, assumed on {r['scale']['assumed']})", highlight=False)
    for name, a in r.get("abnormal", {}).items():
        console.print(f"[bold]{escape(name)}[/bold] (not a class of this model): {a['images']} cells, {a['unidentified']} UNIDENTIFIED, {a['flagged']} flagged, "
                      f"[bold red]{a['missed_unflagged']} passed as an unflagged known type[/bold red], {a['dropped_no_white_cell']} dropped as no white cell "
                      f"(missed {a['missed_share']:.1%})", highlight=False)


@app.command(rich_help_panel=CHECK)
def evaluate(model: Optional[str] = ModelOpt, data: Optional[str] = DataOpt, split: list[str] = typer.Option(["TEST"], help="split(s) to evaluate, e.g. TEST_SIMPLE, TEST"),
             json_out: Optional[Path] = typer.Option(None, "--json", help="write all metrics to this JSON file"),
             out: Optional[Path] = typer.Option(Path("reports/evaluate"), help="folder for report.md and PNGs (one sub-folder a split)"),
             manifest: Optional[str] = typer.Option(None, help="split manifest giving source cells (default: the model's own, if it matches)"),
             ignore_unknown: bool = typer.Option(False, help="skip class folders the model does not know"),
             abnormal: bool = typer.Option(False, help="class folders the model does not know hold cells it must catch (e.g. BLAST): report how many it flags, calls UNIDENTIFIED or misses")):
    """Accuracy, per-class P/R/F1, confusion matrix, misclassified gallery, calibration, per-source-cell accuracy."""
    from wbc.data.locate import resolve_data
    from wbc.data.scan import require_splits

    data = resolve_data(data)  # before PyTorch loads
    require_splits(data, split)
    from wbc._util.io import atomic_write_text
    from wbc.evaluation.evaluate import evaluate as run_eval
    from wbc.infer.predictor import default_manifest, load_model

    predictor = load_model(model)
    manifest = manifest or default_manifest(predictor)
    results = {}
    for s in split:
        with bar() as p:
            r = run_eval(predictor, data, s, out / s.upper() if out else None, ignore_unknown, manifest, progress=p, abnormal=abnormal)
        _print_eval(r)
        results[s.upper()] = r
        if out:
            console.print(f"report: {out / s.upper() / 'report.md'}", markup=False)
    if json_out:
        atomic_write_text(json_out, json.dumps(results, indent=2))
        console.print(f"metrics written to {json_out}", markup=False)



@app.command(rich_help_panel=MAKE)
def export(out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (.onnx)"), model: Optional[str] = ModelOpt,
           int8: bool = typer.Option(False, "--int8", help="static int8 quantisation, calibrated on TRAIN images"),
           data: Optional[str] = DataOpt, check_split: str = typer.Option("TEST", help="split whose images check the export against PyTorch"),
           check_max: int = typer.Option(256, help="check at most this many images (0: the whole split)"),
           calibration: int = typer.Option(64, help="TRAIN images a class to calibrate int8 on")):
    """Export the model to ONNX (uint8 pixels in, probabilities out) and check it against PyTorch on real images."""
    from wbc.data.locate import resolve_data
    from wbc.models.files import require_onnx_out

    require_onnx_out(out)  # before PyTorch loads
    check_ranges(("--check-max", check_max, check_max >= 0, "at least 0 (0: the whole split)"), ("--calibration", calibration, calibration >= 1, "at least 1"))
    data_root = resolve_data(data)
    from wbc.evaluation.evaluate import match_classes
    from wbc.infer.predictor import load_model
    from wbc.models.export import calibration_images, compare, export_onnx

    native = load_model(model)
    calib = calibration_images(data_root, calibration) if int8 else None
    with console.status("exporting" + (f" and calibrating int8 on {len(calib)} TRAIN images" if int8 else "")):
        export_onnx(native, out, int8=int8, calibration=calib)
    exported = load_model(out)
    lab = match_classes(data_root, check_split, native.classes, ignore_unknown=True)
    idx = np.arange(len(lab.paths)) if not check_max or check_max >= len(lab.paths) else np.linspace(0, len(lab.paths) - 1, check_max).astype(int)
    with bar() as p:
        task = p.add_task(f"checking on {check_split}", total=len(idx))
        a = compare(native, exported, [lab.paths[i] for i in idx], [int(lab.y[i]) for i in idx], lambda n: p.advance(task, n))
    console.print(f"wrote {escape(str(out))} ({out.stat().st_size / 1e6:.1f} MB, {exported.engine.name})")
    console.print(f"checked on {a.images} {check_split} images: max |p_onnx - p_torch| = {a.max_abs_diff:.2e}, "
                  f"same top class {a.same_top_class:.2%}, accuracy PyTorch {a.accuracy_native:.4f} vs ONNX {a.accuracy_exported:.4f}", highlight=False)


@app.command(rich_help_panel=CHECK)
def bench(model: Optional[str] = ModelOpt, images: Optional[Path] = typer.Option(None, help="folder of cell images (default: the TEST split of --data)"),
          data: Optional[str] = DataOpt, seconds: float = typer.Option(5.0, help="seconds per measurement"),
          threads: int = typer.Option(0, help="CPU threads for every row (0: all cores)"), max_images: int = typer.Option(256),
          folder_files: int = typer.Option(1024, help="files in each folder-run row (the images, repeated)"),
          json_out: Path = typer.Option(Path("reports/bench.json"), "--json", help="write the figures here")):
    """Time the reference Xception, the model in PyTorch, ONNX fp32 and ONNX int8 on the same images and threads."""
    import os

    from wbc._util.io import atomic_write_text
    from wbc.data.locate import resolve_data
    from wbc.data.scan import IMAGE_EXTENSIONS, scan
    from wbc.evaluation.bench import bench as run_bench

    check_ranges(("--seconds", seconds, seconds > 0, "positive"), ("--threads", threads, threads >= 0, "at least 0 (0: all cores)"),
                 ("--max-images", max_images, max_images >= 1, "at least 1"), ("--folder-files", folder_files, folder_files >= 1, "at least 1"))
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
    v = r["test_time_views"]
    console.print(f"asked again in each training lab's colours (a sure answer in colours off theirs): {v['asked_again']} of "
                  f"{v['images']} images, {v['passes_per_image']:.2f} network passes an image; ONNX fp32 b32 with them "
                  f"{v['onnx_fp32_batch32_images_per_s']:.1f} images/s, {v['vs_xception']:.1f}x Xception", highlight=False)
    for row in r["training"]:
        console.print(f"{row['path']}: {row['seconds_per_batch32']:.2f} s per batch of 32, ~{row['minutes_per_epoch']:.1f} min per "
                      f"7,889-image epoch, peak RSS {row['peak_rss_mb']:.0f} MB", highlight=False)
    atomic_write_text(json_out, json.dumps(r, indent=2))
    console.print(f"figures written to {json_out}", markup=False)


