"""`wbc predict`: files, folders and globs classified, streamed to a table, CSV, JSON Lines or Parquet."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wbc.cli import USE, ModelOpt, app
from wbc.cli.render import bar, console
from wbc.errors import WbcError, check_ranges
from wbc.infer.answers import NO_WHITE_CELL, fault_warning, format_of


def _label(p) -> str:
    if p.label == NO_WHITE_CELL:
        return "no white cell found"
    return f"[bold red]{p.label}[/bold red]" if p.label in ("UNIDENTIFIED", "BLAST") else p.label


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


LONG_RUN = 200  # images past which a run printed at its end is pointed to --out


def _engine_for(model: str | None, engine: str, n_files: int):
    """auto: ONNX Runtime for collections (>= 200 files: its export pays back) or where an earlier run exported the
    model already, PyTorch for a few images otherwise. A bad model file is said here, before any image is looked at."""
    from wbc.infer.predictor import exported, load_fastest, load_model

    if engine == "pytorch":
        return load_model(model)
    if engine != "auto" or n_files >= 200:  # onnx, ray, or a collection
        return load_fastest(model)
    return exported(model) or load_model(model)


@app.command(rich_help_panel=USE)
def predict(inputs: list[str] = typer.Argument(..., help="single-cell images, folders (searched recursively) or globs ('cells/**/*.png')"),
            model: Optional[str] = ModelOpt,
            format: Optional[str] = typer.Option(None, "--format", "-f", help="table, csv, jsonl or json (default: table on a terminal, csv with --out)"),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="stream results to this CSV, JSON Lines (.jsonl) or Parquet (.parquet) file"),
            resume: bool = typer.Option(False, help="continue an interrupted run into --out, skipping files already there"),
            px_per_um: Optional[str] = typer.Option(None, help="pixels a micrometre of the images (default: measured in each image from its red cells, "
                                                   "and with ten or more images the run's median unless an image's own red cells say strongly otherwise); "
                                                   "'auto': measured once on 50 of them, for all (one microscope: ~3x faster)"),
            engine: str = typer.Option("auto", help="auto (ONNX Runtime for 200 files or more, or once an earlier run exported the model; "
                                        "else PyTorch), pytorch, onnx, or ray (the same job on a Ray cluster)"),
            address: Optional[str] = typer.Option(None, help="Ray cluster address (with --engine ray; default: a local Ray)"),
            workers: Optional[int] = typer.Option(None, help="decoder processes (default: half the cores above 2; 0: one framing thread)"),
            batch_size: int = typer.Option(32)):
    """Class, probabilities and a review flag for every image ("no white cell found" when there is none).
    Unreadable files are reported and skipped; the exit status is 1 when any file failed."""
    from wbc.data.collect import collect_images

    found = collect_images(inputs).require("classify")  # names only, before torch loads: missing inputs said in a second
    check_ranges(("--batch-size", batch_size, batch_size >= 1, "at least 1"),
                 ("--workers", workers, workers is None or workers >= 0, "at least 0 (0: one framing thread)"))
    fmt = format or (format_of(out, None) if out else "table")
    _check_options(fmt, out, resume, engine)
    if fmt in ("table", "json") and len(found.files) > LONG_RUN:
        console.print(f"note: {len(found.files)} images, and the {fmt} prints when all are done: `--out results.csv` writes each row "
                      "as it is made, and `--resume` carries an interrupted run on", highlight=False, markup=False)
    from wbc.infer.batch import default_workers, run_to_file
    from wbc.infer.predictor import flag_run

    scale = _parse_scale(px_per_um)
    stream = None
    if engine == "ray":  # the cluster is checked first: a wrong address or token is said in seconds, before any file is written
        from wbc.infer.ray import ray_stream

        stream = ray_stream(address)
    predictor = _engine_for(model, engine, len(found.files))
    if scale == "auto":
        scale = _measured_once(found.files)
    rows: list = []
    sink = None if out else _StdoutRows(fmt, predictor.classes).write if fmt in ("csv", "jsonl") else rows.extend
    with bar(transient=True) as p:
        task = p.add_task("classifying", total=len(found.files))
        summary = run_to_file(predictor, found.files, out, fmt, resume, sink, batch_size=batch_size, px_per_um=scale,
                              workers=default_workers() if workers is None else workers, on_batch=lambda n: p.advance(task, n), stream=stream)
    if rows and summary.lab.judge():  # table and json print at the end: their rows given before the run was judged are
        flag_run([o.prediction for o in rows if o.prediction], summary.lab)  # flagged too
        summary.mended = summary.before_judged
    if fmt == "json":
        print(json.dumps([o.prediction.to_dict() if o.prediction else {"source": o.path, "error": o.error} for o in rows], indent=2))
    elif fmt == "table":
        console.print(_table(rows, predictor.classes, console.width))
    _report([*found.problems, *summary.failures], summary, out)


def _check_options(fmt: str, out: Path | None, resume: bool, engine: str) -> None:
    if fmt not in ("table", "csv", "jsonl", "json", "parquet"):
        raise WbcError(f"--format must be table, csv, jsonl, json or parquet, not '{fmt}'")
    if fmt == "parquet" and not out:
        raise WbcError("parquet needs --out FILE.parquet")
    if resume and not out:
        raise WbcError("--resume continues a run written with --out FILE: pass the same --out")
    if out and fmt in ("table", "json"):
        raise WbcError(f"--out streams csv, jsonl or parquet, not {fmt}")
    if engine not in ("auto", "pytorch", "onnx", "ray"):
        raise WbcError(f"--engine must be auto, pytorch, onnx or ray, not '{engine}'")


def _measured_once(files: list[str]) -> float:
    """--px-per-um auto: the median red-cell scale of 50 of the files (one microscope)."""
    from wbc.image.scale import source_scale

    s = source_scale(files, sample=50)
    if not s["px_per_um"]:
        raise WbcError("--px-per-um auto: no red cells measurable in 50 of the images; pass the number")
    console.print(f"scale {s['px_per_um']:.2f} px/um (median of {s['found']} images, 5th-95th percentile {s['p5']:.2f}-{s['p95']:.2f})", highlight=False)
    return s["px_per_um"]


WIDE = 160  # columns a terminal needs for a probability column a class; a narrower one gets the runner-up instead


def _table(rows: list, classes: list[str], width: int) -> Table:
    """One row an image. On a terminal narrower than WIDE (80 columns: a path folded over four lines between nine
    probability columns) the class and its runner-up only; the csv and json keep every probability."""
    every = width >= WIDE
    t = Table(caption=None if every else f"every class's probability: --format csv or json (or a terminal {WIDE} columns wide)")
    t.add_column("image", overflow="fold")  # a path folds onto a second line rather than losing its file name
    for col in ("class", "p", *([c[:5] for c in classes] if every else ["next"]), "px/um"):
        t.add_column(col)
    t.add_column("review: why", overflow="fold", min_width=12, max_width=48)  # the reason, as in the csv's review_reason and note
    for o in rows:
        q = o.prediction
        if q is None:
            t.add_row(Text(o.path), "[red]unreadable[/red]", "", *[""] * (len(classes) if every else 1), "", "")
            continue
        probs = [f"{q.probabilities[c]:.3f}" for c in classes] if every else [_next(q)]
        t.add_row(Text(str(q.source)), _label(q), f"{q.probability:.3f}", *probs,
                  f"{q.px_per_um:.1f}" + ("?" if q.scale in ("assumed", "cell", "run") else ""), _why(q))
    return t


def _next(q) -> str:
    """The most probable class after the answer's (after the top one for UNIDENTIFIED); none for no white cell."""
    if q.label == NO_WHITE_CELL:
        return ""
    others = sorted(((p, c) for c, p in q.probabilities.items() if c != q.label), reverse=True)
    p, c = others[0] if q.label in q.probabilities else others[1]
    return f"{c} {p:.3f}"


def _why(q) -> str:
    """The review flag's reason, and for "no white cell found" why none was (the csv's review_reason and note)."""
    flag = f"[bold]REVIEW[/bold]: {escape(q.review_reason)}" if q.review and q.review_reason else ("REVIEW" if q.review else "")
    none = escape(q.note.removeprefix("no white cell found: ")) if q.note else ""
    several = f"{q.cells_seen} white cells: the middle one's answer" if q.several else ""
    return "; ".join(x for x in (flag, none, several) if x)


def _report(failures: list[tuple[str, str]], summary, out: Path | None) -> None:
    """Skipped files (the first 20), one closing line; exit status 1 when any file failed."""
    for path, why in failures[:20]:
        console.print(f"[red]skipped[/red] {escape(why if path in why else f'{path}: {why}')}", highlight=False, soft_wrap=True)
    if len(failures) > 20:
        console.print(f"... and {len(failures) - 20} more (see the error column{' of ' + str(out) if out else ''})", markup=False)
    if out or summary.done + len(failures) > 1:
        counts = ", ".join(f"{('no white cell' if k == 'NO_WHITE_CELL' else k)} {v}" for k, v in summary.labels.most_common())
        console.print(f"{summary.done} classified, {len(failures)} failed" + (f", {summary.skipped} already in {out}" if summary.skipped else "")
                      + (f"; {counts}" if counts else "") + (f"; results in {out}" if out else ""), highlight=False, markup=False)
    if summary.several:
        console.print(f"note: {summary.several} of {summary.done} images show more than one white cell; each is answered for "
                      "the cell nearest its middle (the cells_seen column): `wbc count` classifies every cell of a field",
                      highlight=False, markup=False, soft_wrap=True)
    faults = fault_warning(summary.reasons, summary.done)
    if faults:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(faults)}", highlight=False, soft_wrap=True)
    warning = summary.lab.warning() if summary.lab else None
    if warning:
        late = (f" ({summary.mended} rows written before it was clear were flagged at the end of the run)" if summary.mended else
                f" ({summary.before_judged} rows written before it was clear keep only their own flags)" if summary.before_judged else "")
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning + late)}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)


class _StdoutRows:
    """csv / jsonl rows to stdout as they come (a pipe sees them at once)."""

    def __init__(self, fmt: str, classes: list[str]):
        import csv

        from wbc.infer.batch import columns

        self.fmt, self.classes = fmt, classes
        if fmt == "csv":
            self.w = csv.DictWriter(sys.stdout, columns(classes))
            self.w.writeheader()

    def write(self, outcomes) -> None:
        from wbc.infer.batch import row_of

        for o in outcomes:
            r = row_of(o, self.classes)
            if self.fmt == "csv":
                self.w.writerow(r)
            else:
                print(json.dumps(r))
        sys.stdout.flush()


