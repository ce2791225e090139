"""`wbc count` and the detector's commands: whole smear fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from wbc.cli import CHECK, MAKE, USE, ModelOpt, app
from wbc.cli.render import bar, console, escape
from wbc.errors import WbcError, check_ranges
from wbc.models.files import require_detector


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


def _count_fields(predictor, files: list[str], px_per_um: float | None, detector, out: Path | None) -> tuple[list, list[tuple[str, str]]]:
    """(a FieldCount a readable field, (file, why) for the rest); annotated PNGs into `out`."""
    from wbc.count.count import COUNT_MAX_PIXELS, count_field, save_annotated
    from wbc.image.decode import decode

    fields, failures = [], []
    for img in files:
        try:
            fc = count_field(predictor, img, px_per_um, name=img, detector=detector)
        except WbcError as e:
            failures.append((img, str(e)))
            console.print(f"[red]skipped[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            continue
        if not fc.boxes:
            console.print(f"[yellow]no cells found in {escape(str(img))}[/yellow]: is it a blood smear field at about {fc.px_per_um:.1f} px/um "
                          f"({fc.scale})? (see --px-per-um)", highlight=False)
        if out:
            fc.annotated = str(save_annotated(decode(img, max_pixels=COUNT_MAX_PIXELS), fc, out))
        fields.append(fc)
    return fields, failures


def _redraw(fields: list, out: Path) -> None:
    from wbc.count.count import COUNT_MAX_PIXELS, save_annotated
    from wbc.image.decode import decode

    for fc in fields:
        if fc.wbc:
            fc.annotated = str(save_annotated(decode(fc.source, max_pixels=COUNT_MAX_PIXELS), fc, out))


def _print_csv(fields: list) -> None:
    import csv

    w = csv.writer(sys.stdout)
    w.writerow(["image", "type", "x0", "y0", "x1", "y1", "class", "probability", "review", "review_reason"])
    for fc in fields:
        for c in fc.boxes:
            if c.kind != "WBC":
                w.writerow([fc.source, c.kind, f"{c.x0:.0f}", f"{c.y0:.0f}", f"{c.x1:.0f}", f"{c.y1:.0f}", "", "", "", ""])
        for wd in fc.wbc:
            w.writerow([fc.source, "WBC", *[f"{v:.0f}" for v in wd["box"]], wd["class"], f"{wd['probability']:.4f}", int(wd["review"]),
                        wd.get("review_reason") or ""])


def _print_field_warnings(fields: list) -> None:
    """A field the count cannot be trusted on as a whole (overexposed, greyscale, coarse, noisy, its scale assumed,
    more white than red cells): said once per field."""
    for fc in fields:
        for line in fc.warnings:
            console.print(f"[bold yellow]warning:[/bold yellow] {escape(Path(fc.source).name)}: {escape(line)}", highlight=False, soft_wrap=True)


def _fields_table(fields: list, totals: dict) -> Table:
    t = Table(title="cells per field")
    t.add_column("image", overflow="fold")  # folded, never cut: BloodImage_0001… named two fields of an 80-column terminal alike
    for col in ("px/um", "RBC", "WBC", "platelets", "WBC classes"):
        t.add_column(col)
    names = [Path(fc.source).name for fc in fields]
    if len(set(names)) < len(names):  # one name in two folders: the paths tell them apart
        names = [str(fc.source) for fc in fields]
    for fc, name in zip(fields, names):
        c = fc.counts
        t.add_row(Text(name), f"{fc.px_per_um:.1f} {fc.scale}" + (", tones mapped" if fc.tones == "mapped" else ""), str(c["RBC"]), str(c["WBC"]), str(c["Platelets"]),
                  ", ".join(f"{w['class']} {w['probability']:.2f}" + (" (review)" if w["review"] else "") for w in fc.wbc) or "-")
    if len(fields) > 1:
        t.add_row("total", "", str(totals["RBC"]), str(totals["WBC"]), str(totals["Platelets"]), "")
    return t


@app.command(rich_help_panel=USE)
def count(images: list[str] = typer.Argument(..., help="smear field images, folders or globs (e.g. BCCD 640x480 JPEGs)"), model: Optional[str] = ModelOpt,
          out: Optional[Path] = typer.Option(None, help="folder for annotated PNGs (one per image)"),
          format: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
          px_per_um: Optional[float] = typer.Option(None, help="pixels a micrometre of the images (BCCD 640x480: 14); default: measured in each "
                                                                "field from its red cells (14 assumed when too few); every field is rescaled to the detector's"),
          detector: Optional[str] = typer.Option(None, help="learned (default when installed), classic, or a detector file (.safetensors/.onnx)")):
    """Find and count RBCs, WBCs and platelets in smear fields of any size; classify each WBC; report the differential."""
    from wbc.data.collect import collect_images

    check_ranges(("--format", f"'{format}'", format in ("table", "csv", "json"), "table, csv or json"),
                 ("--px-per-um", px_per_um, px_per_um is None or px_per_um > 0, "positive"))
    if out and out.exists() and not out.is_dir():
        raise WbcError(f"--out {out} is a file: pass a folder for the annotated fields")
    require_detector(detector)
    found = collect_images(images).require("count")
    # torch and the models load only now: a mistake above is said in a second, not after seven
    from wbc.count.count import field_summary
    from wbc.count.detector import default_detector
    from wbc.infer.predictor import flag_run, lab_check, load_fastest

    predictor = load_fastest(model)
    fields, failures = _count_fields(predictor, found.files, px_per_um, default_detector(detector), out)
    failures = list(found.problems) + failures
    labels = [w["class"] for fc in fields for w in fc.wbc]
    summary = field_summary([fc.counts for fc in fields], labels, predictor.classes)
    lab = lab_check(predictor, (w for fc in fields for w in fc.wbc))
    flag_run([w for fc in fields for w in fc.wbc], lab)
    if out and lab.judge():  # drawn as each field was counted (a killed run keeps them): drawn again with the run's flags
        _redraw(fields, out)
    if format == "json":
        print(json.dumps({"images": [fc.to_dict() | ({"annotated": fc.annotated} if out else {}) for fc in fields], **summary,
                          "failed": [{"image": p, "error": e} for p, e in failures]}, indent=2))
    elif format == "csv":
        _print_csv(fields)
        _print_field_warnings(fields)  # on stderr: the CSV stays one row a cell
    else:
        console.print(_fields_table(fields, summary["totals"]))
        _print_field_warnings(fields)
        console.print(_diff_table(f"WBC differential ({len(labels)} WBC)", summary["differential"]))
        for line in summary["alerts"]:
            console.print(f"[bold red]{line}[/bold red]", highlight=False)
        warning = lab.warning()
        if warning:
            console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning)}", highlight=False, soft_wrap=True)
        if out:
            console.print(f"annotated images in {out}", markup=False)
    if failures:
        console.print(f"{len(fields)} fields counted, {len(failures)} failed", highlight=False)
        raise typer.Exit(1)


@app.command("train-detector", rich_help_panel=MAKE)
def train_detector(data: Optional[str] = typer.Option(None, "--data", help="BCCD in Pascal VOC form (default: $WBC_BCCD or ../shared/data/bccd)"),
                   out: Path = typer.Option(Path("runs/detector"), help="run folder"), epochs: int = typer.Option(60),
                   batch_size: int = typer.Option(16), crop: int = typer.Option(256, help="training crop side at the detector's 7 px/um"),
                   lr: float = typer.Option(1e-3), patience: int = typer.Option(10, help="epochs without a better val mAP@0.5 before stopping"),
                   ignore_unlabelled: bool = typer.Option(True, "--ignore-unlabelled/--penalise-unlabelled",
                                                          help="no loss where the classic detector finds a cell no box covers"),
                   max_images: int = typer.Option(0, help="use at most this many fields a list (quick runs)"),
                   pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained"), workers: int = typer.Option(0),
                   photometric: str = typer.Option("classifier", help="classifier (its colour and stain augmentation plus colour casts) or stain (HED and brightness only)"),
                   cast: float = typer.Option(0.25, help="colour casts: each channel's gain in 1 +- cast"),
                   seed: int = typer.Option(0), resume: bool = typer.Option(False, help="continue the run in --out")):
    """Train the CenterNet cell detector (RBC, WBC, platelets) on BCCD train, early stopping on val mAP@0.5."""
    check_ranges(("--photometric", photometric, photometric in ("classifier", "stain"), "classifier or stain"),
                 ("--epochs", epochs, epochs >= 1, "at least 1"), ("--batch-size", batch_size, batch_size >= 1, "at least 1"),
                 ("--crop", crop, crop >= 64, "at least 64 (pixels)"), ("--lr", lr, lr > 0, "positive"), ("--patience", patience, patience >= 1, "at least 1"),
                 ("--max-images", max_images, max_images >= 0, "at least 0 (0: all)"), ("--workers", workers, workers >= 0, "at least 0"),
                 ("--cast", cast, 0 <= cast < 1, "at least 0 and below 1"))
    from wbc.count.train_detector import DetectorConfig
    from wbc.count.train_detector import train_detector as run
    from wbc.data.locate import resolve_bccd

    cfg = DetectorConfig(data="" if resume else resolve_bccd(data), out=str(out), epochs=epochs, photometric=photometric, cast=cast, batch_size=batch_size, crop=crop, lr=lr,
                         patience=patience, ignore_unlabelled=ignore_unlabelled, max_images=max_images, pretrained=pretrained,
                         workers=workers, seed=seed)
    with bar() as p:
        run(cfg, resume=resume, progress=p)


@app.command("export-detector", rich_help_panel=MAKE)
def export_detector_cmd(out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (.onnx)"),
                        detector: Optional[str] = typer.Option(None, help="detector file (default: the shipped one)")):
    """Export the cell detector to ONNX (uint8 pixels in, peaks/sizes/offsets out, any field size); `wbc count --detector FILE.onnx` runs it."""
    from wbc.models.files import require_onnx_out

    require_onnx_out(out)  # before PyTorch loads
    require_detector(detector)
    from wbc.count.detector import Detector, export_detector, shipped_detector_path

    src = Path(detector) if detector else shipped_detector_path()
    with console.status("exporting"):
        export_detector(src, out)
    d = Detector(out)
    console.print(f"wrote {escape(str(out))} ({out.stat().st_size / 1e6:.1f} MB, {d.engine}, classes {', '.join(d.spec.classes)})")


@app.command("evaluate-count", rich_help_panel=CHECK)
def evaluate_count(data: Optional[str] = typer.Option(None, "--data", help="BCCD in Pascal VOC form (default: $WBC_BCCD or ../shared/data/bccd)"),
                   split: str = typer.Option("test", help="ImageSets/Main list to evaluate on"), model: Optional[str] = ModelOpt,
                   labels: Optional[str] = typer.Option(None, help="dataset-master/labels.csv (default: from the blood-cells data when found)"),
                   json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures here"),
                   detector: Optional[str] = typer.Option(None, help="learned (default when installed), classic, or a detector file"),
                   px_per_um: Optional[float] = typer.Option(None, help="the fields' pixels a micrometre (BCCD: 14); default: measured per field, as `wbc count`")):
    """Detection AP@0.5 and AP@[.5:.95] per type, precision/recall and count error, WBC class accuracy on a BCCD list."""
    from wbc.count.voc import read_ids
    from wbc.data.locate import resolve_bccd, resolve_data

    root = resolve_bccd(data)
    read_ids(root, split)  # a wrong folder, list or detector file said before PyTorch loads
    require_detector(detector)
    from wbc._util.io import atomic_write_text
    from wbc.count.evaluate import evaluate_count as run
    from wbc.infer.predictor import load_fastest

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

    predictor = load_fastest(model)
    with bar() as p:
        r = run(predictor, root, split, labels, test_simple, progress=p, detector=default_detector(detector), px_per_um=px_per_um)
    scale = f"{px_per_um:g} px/um" if px_per_um else "scale measured per field"
    t = Table(title=f"BCCD {split}, {r['detector']} detector, {scale}: {r['images']} images, {1 / r['seconds_per_image']:.1f} images/s, "
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
        console.print(f"figures written to {json_out}", markup=False)


