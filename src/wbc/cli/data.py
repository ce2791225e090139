"""`wbc data ...`: check, explore, split, measure the scale of, and download image sets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from wbc.cli import DataOpt, data_app
from wbc.cli.render import bar, console, escape
from wbc.errors import WbcError


@data_app.command("check")
def data_check(path: Optional[str] = typer.Argument(None, help="dataset folder"), max_list: int = typer.Option(50, help="list at most this many bad files")):
    """Count images per split and class; list every unreadable, truncated, empty, non-image or odd-sized file.
    A Pascal VOC folder of smear fields (BCCD) is checked as one: fields, annotations, boxes, split lists.
    Exits 1 when a file would be left out or split lists overlap (a script can stop on it), 0 otherwise:
    odd sizes and odd boxes are listed, not failed."""
    from wbc.data.locate import resolve_data
    from wbc.data.scan import is_voc, scan

    root = resolve_data(path)
    if is_voc(root):
        return _check_voc(root, max_list)
    with bar(transient=True) as p:
        s = scan(root, progress=p)
    t = Table(title=f"{s.root}")
    t.add_column("split")
    for c in s.classes:
        t.add_column(c, justify="right")
    t.add_column("total", justify="right")
    for split, counts in sorted(s.counts().items()):
        t.add_row(split, *[str(counts.get(c, 0)) for c in s.classes], str(sum(counts.values())))
    console.print(t)
    _listed((("bad files (skipped everywhere)", s.bad), ("odd-sized files (used)", s.odd_size)), max_list)
    console.print(f"{len(s.records)} good images, {len(s.bad)} bad, {len(s.odd_size)} odd-sized")
    _fail_if(len(s.bad), "bad file(s): wbc leaves them out everywhere; replace or remove them for a clean check")


def _listed(groups, max_list: int) -> None:
    for title, items in groups:
        if items:
            console.print(f"[bold]{len(items)} {title}:[/bold]")
            for b in items[:max_list]:
                console.print(f"  {b.path}: {b.reason}", highlight=False, markup=False)
            if len(items) > max_list:
                console.print(f"  ... and {len(items) - max_list} more")


def _check_voc(root: str, max_list: int) -> None:
    from wbc.data.voc import TYPES, check_voc

    with bar(transient=True) as p:
        v = check_voc(root, progress=p)
    t = Table(title=f"{v.root} (Pascal VOC smear fields)")
    for col in ("list", "fields", *TYPES):
        t.add_column(col, justify="left" if col == "list" else "right")
    for name, counts in v.boxes.items():
        t.add_row(Text(name), str(v.images if name == "all" else len(v.lists[name])), *[str(counts.get(k, 0)) for k in TYPES])
    console.print(t)
    _listed((("bad files (fields left out)", v.bad), ("boxes to look at", v.odd)), max_list)
    for line in v.overlaps:
        console.print(f"[bold red]split lists overlap:[/bold red] {escape(line)}: a field scored on must not be trained on")
    console.print(f"{v.images} readable fields, {len(v.bad)} bad files, {len(v.odd)} boxes to look at, "
                  f"{'no' if not v.overlaps else len(v.overlaps)} overlapping split lists", markup=False)
    _fail_if(len(v.bad) + len(v.overlaps), "problem(s) above: bad fields are left out; overlapping split lists leak test fields into training")


def _fail_if(n: int, what: str) -> None:
    """The check's verdict as its exit status, said in one last line."""
    if n:
        console.print(f"[bold red]check failed:[/bold red] {n} {what}")
        raise typer.Exit(1)


@data_app.command("explore")
def data_explore(path: Optional[str] = typer.Argument(None, help="dataset folder"), out: Path = typer.Option(Path("reports/explore"), help="output folder"),
                 split: str = typer.Option("TRAIN", help="split to explore"), per_class: int = typer.Option(200, help="images a class for the histograms")):
    """Sample grids, grayscale histograms with data-derived thresholds, black-border fraction."""
    from wbc.data.explore import explore
    from wbc.data.locate import resolve_data

    with bar() as p:
        report = explore(resolve_data(path), out, split=split, per_class=per_class, progress=p)
    console.print(f"report written to {report}", markup=False)


@data_app.command("split")
def data_split(data: Optional[str] = DataOpt, out: Path = typer.Option(Path("runs/split_manifest.csv"), help="manifest CSV to write"),
               val_fraction: float = typer.Option(0.2, help="share of TRAIN source groups held out for validation"),
               seed: int = typer.Option(0)):
    """Group augmented copies by source cell (from the pixels) and split TRAIN into train/val by group."""
    from wbc.data.locate import resolve_data
    from wbc.data.scan import scan
    from wbc.data.split import (
        check_val_fraction,
        make_manifest,
        summary,
        write_manifest,
    )

    check_val_fraction(val_fraction)
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
        console.print(f"[yellow]{len(crossing)} source group(s) appear in TRAIN and in another split:[/yellow] {escape(', '.join(crossing))}")
    else:
        console.print("no source group appears in both TRAIN and another split")
    console.print(f"manifest written to {out}", markup=False)


@data_app.command("scale")
def data_scale(paths: list[str] = typer.Argument(..., help="dataset folders, image folders or images"),
               sample: int = typer.Option(120, help="images measured per folder (evenly spread)")):
    """Pixels a micrometre, measured from the red cells: median and spread per folder."""
    from wbc.data.collect import collect_images
    from wbc.image.scale import source_scale

    t = Table(title="scale from red cells (RBC diameter 7.5 um)")
    for col in ("images", "measured", "px/um median", "5th-95th pct"):
        t.add_column(col, justify="left" if col == "images" else "right")
    for p in paths:
        files = collect_images([p]).files
        if not files:
            raise WbcError(f"no images in {p}")
        s = source_scale(files, sample)
        t.add_row(Text(str(p)), f"{s['found']}/{s['images']}", f"{s['px_per_um']:.2f}" if s["px_per_um"] else "-",
                  f"{s['p5']:.2f}-{s['p95']:.2f}" if s["px_per_um"] else "no red cells found")
    console.print(t)


@data_app.command("download")
def data_download(dest: Path = typer.Option(Path("data"), help="folder to put the dataset in")):
    """Fetch the public mirror of the Kaggle blood-cells data (checksum-verified) when online."""
    from wbc.data.download import download

    console.print(f"dataset ready at {download(dest)}", markup=False)


