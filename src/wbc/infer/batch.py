"""Classify whole collections: stream results to a file, skip bad files, survive a kill.

A run reads files with a pool of decoder processes (decoding and framing are the CPU work
besides the network; on 2 cores or fewer, one thread framing ahead of the network instead),
classifies them in batches on one engine (ONNX Runtime by default), and
appends each batch's rows to the output, flushed and fsync'd, so a run killed at any point keeps
every row it wrote. `resume` reads the output back, drops a torn last line, and skips every file
already there (good or failed); a file that cannot be read becomes a row with its reason in the
`error` column, so it is reported once and not retried. The first LAB_HOLD rows wait until the run's cells can be
judged as a whole (wbc.infer.predictor.LabCheck): a run out of the model's world, or one holding blasts, has every
answer flagged for review; rows it wrote before it was judged (a longer run, or a resumed one) are flagged in its
output file at its end.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing as mp
import os
import sys
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from wbc.errors import WbcError
from wbc.infer.answers import format_of, reason_kinds
from wbc.infer.predictor import (
    BLAST_RUN_REASON,
    COLOUR_REASON,
    LAB_REASON,
    check_scale,
    flag_run,
    lab_check,
    run_reasons_of,
    with_reasons,
)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """One file's result: a Prediction, or the reason it could not be classified."""

    path: str
    prediction: object | None = None  # wbc.infer.predictor.Prediction
    error: str | None = None


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output (resume)
    labels: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # review reasons by kind (wbc.infer.answers.reason_kinds)
    failures: list[tuple[str, str]] = field(default_factory=list)
    lab: object = None  # wbc.infer.predictor.LabCheck: the run's cells against the training sources
    before_judged: int = 0  # rows written while the run was not (yet) judged as a whole: their own flags only
    mended: int = 0  # rows of the output flagged at the run's end: written before the run was judged (`mend_file`)
    several: int = 0  # images showing more than one white cell: each answered for the one nearest its middle


# ---- framing in worker processes ---------------------------------------------------------------

_SPEC = None
_PX = None


def _init_worker(spec_dict: dict, px_per_um: float | None) -> None:
    import cv2

    from wbc.models.classifier import ModelSpec

    global _SPEC, _PX
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _SPEC, _PX = ModelSpec.from_dict(spec_dict), px_per_um


def frame_file(path: str, spec=None, px_per_um: float | None = None):
    """(path, Framed or None, error or None): never raises for a bad file."""
    from wbc.image.framing import frame_source

    try:
        return path, frame_source(path, spec or _SPEC, px_per_um if spec is not None else _PX), None
    except WbcError as e:
        return path, None, str(e)
    except MemoryError:
        return path, None, f"{path}: out of memory while decoding (image too large?)"
    except Exception as e:  # a decoder bug on a hostile file must not end the run
        return path, None, f"cannot read image {path}: {type(e).__name__}: {str(e)[:160]}"


AHEAD = 64  # files the framing thread may run ahead of the network


def _framed_ahead(files: list[str], spec, px_per_um) -> Iterator[tuple]:
    """Framed files in input order from one thread that frames while the engine runs the batch before: decoding,
    the red-cell circles and ONNX Runtime release the GIL, so the two overlap."""
    ex, pending = ThreadPoolExecutor(1, thread_name_prefix="wbc-framing"), deque()
    try:
        for f in files:
            pending.append(ex.submit(frame_file, f, spec, px_per_um))
            if len(pending) > AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # a run stopped early leaves no thread behind


def _framed_stream(files: list[str], spec, px_per_um, workers: int) -> Iterator[tuple]:
    """Framed files in input order, from `workers` processes (0: a framing thread in this process)."""
    if workers <= 0 or len(files) < 64:
        yield from _framed_ahead(files, spec, px_per_um)
        return
    ctx = mp.get_context("spawn")  # no fork after torch/ONNX Runtime threads exist
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec.to_dict(), px_per_um)) as pool:
        yield from pool.imap(frame_file, files, chunksize=16)


def classify_stream(predictor, files: list[str], batch_size: int = 32, workers: int = 0, px_per_um: float | None = None) -> Iterator[list[Outcome]]:
    """Outcomes for `files`, a batch at a time, in input order."""
    pending: list[tuple] = []

    def flush() -> list[Outcome]:
        good = [(p, f) for p, f, _ in pending if f is not None]
        probs, dist = predictor.scores(torch.stack([f.pixels for _, f in good])) if good else (None, None)
        answers = predictor.to_predictions(probs, [p for p, _ in good], [f for _, f in good], dist) if good else []
        by_path = {p: a for (p, _), a in zip(good, answers)}
        return [Outcome(p, by_path.get(p), e) for p, _, e in pending]

    for item in _framed_stream(files, predictor.spec, px_per_um, workers):
        pending.append(item)
        if len(pending) == batch_size:
            yield flush()
            pending = []
    if pending:
        yield flush()


# ---- the output file -------------------------------------------------------------------------


def columns(classes: list[str]) -> list[str]:
    return ["path", "class", "probability", *[f"p_{c}" for c in classes], "review", "white_cell", "px_per_um", "scale", "error", "review_reason", "distance", "colour_distance",
            "note",  # why no white cell was found (blank where one was)
            "cells_seen"]  # stained cells in the image: more than 1, and the answer is the one nearest its middle's


def row_of(o: Outcome, classes: list[str]) -> dict:
    p = o.prediction
    if p is None:
        return {"path": o.path, "class": "", "probability": "", **{f"p_{c}": "" for c in classes}, "review": "", "white_cell": "",
                "px_per_um": "", "scale": "", "error": o.error, "review_reason": "", "distance": "",
                "colour_distance": "", "note": "", "cells_seen": ""}
    return {"path": o.path, "class": p.label, "probability": round(p.probability, 6),
            **{f"p_{c}": round(p.probabilities[c], 6) for c in classes}, "review": int(p.review),
            "white_cell": int(p.to_dict()["white_cell"]), "px_per_um": round(p.px_per_um, 3) if p.px_per_um else "",
            "scale": p.scale or "", "error": "", "review_reason": p.review_reason or "",
            "distance": "" if p.distance is None else p.distance, "colour_distance": "" if p.colour_distance is None else p.colour_distance, "note": p.note or "",
            "cells_seen": "" if p.cells_seen is None else p.cells_seen}


def _complete_prefix(data: bytes) -> bytes:
    """The bytes up to the last newline: what a kill mid-write leaves after it is a torn line."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


@dataclass
class Earlier:
    """What the rows already in an output say about the run, for the LabCheck of the run that resumes it."""

    cells: list[tuple] = field(default_factory=list)  # (distance, class, colour distance) of each classified row
    far: bool = False  # a row carries the run's "lab unlike" reason: the run was judged out of the model's world
    colours: bool = False  # ... its "stain and light unlike" reason
    blasts: bool = False  # ... its "blasts in this run" reason

    def add(self, row: dict) -> None:
        if row.get("class"):
            self.cells.append((number(row.get("distance")), sys.intern(row["class"]), number(row.get("colour_distance"))))
            reason = row.get("review_reason") or ""
            self.far, self.blasts = self.far or LAB_REASON in reason, self.blasts or BLAST_RUN_REASON in reason
            self.colours = self.colours or COLOUR_REASON in reason


def number(v) -> float | None:
    """A row's measured number (None: not measured; an output written before the column, or a blank in it)."""
    return None if v in ("", None) else float(v)


def older_header(header: list[str], classes: list[str]) -> bool:
    """An older wbc's csv header: the same classes, in order, and no column today's lacks (review_reason, distance,
    colour_distance, note and cells_seen came later; their cells are read as not measured)."""
    new = columns(classes)
    return header != new and "path" in header and set(header) <= set(new) and \
        [h for h in header if h.startswith("p_")] == [f"p_{c}" for c in classes]


def upgrade_csv(path: Path, classes: list[str]) -> bool:
    """Rewrite a csv an older wbc wrote under today's header, atomically, the columns added since left blank (a torn
    last line dropped), so a run begun before an upgrade resumes instead of being refused; whether it did."""
    from wbc._util.io import atomic_save

    with open(path, newline="", encoding="utf-8", errors="replace") as f:  # the header alone: most resumes stop here
        header = next(csv.reader(f), None)
    if header is None or not older_header(header, classes):
        return False
    reader = csv.DictReader(io.StringIO(_complete_prefix(path.read_bytes()).decode("utf-8", errors="replace")))

    def rewrite(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as dst:
            w = csv.DictWriter(dst, columns(classes), restval="")
            w.writeheader()
            w.writerows(reader)
            dst.flush()
            os.fsync(dst.fileno())

    atomic_save(path, rewrite)
    log.info("%s: written by an older wbc; its rows kept under today's columns", path)
    return True


def read_done(path: Path, fmt: str, classes: list[str]) -> tuple[set[str], int, Earlier]:
    """(paths already in the output, its length in bytes once any torn last line is dropped, what its rows say)."""
    data = path.read_bytes()
    good = _complete_prefix(data)
    done: set[str] = set()
    earlier = Earlier()
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(good.decode("utf-8", errors="replace")))
        if reader.fieldnames is None:
            return set(), 0, earlier
        if reader.fieldnames != columns(classes):
            raise WbcError(f"{path} was written for other classes or by another tool (its header differs): choose another --out")
        for r in reader:
            done.add(r["path"])
            earlier.add(r)
    else:
        for line in good.decode("utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
                done.add(r["path"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise WbcError(f"{path} holds a line that is not a wbc result: choose another --out") from None
            earlier.add(r)
    return done, len(good), earlier


class ParquetWriter:
    """Rows to a Parquet file (pyarrow), one row group a batch: compact for millions of cells. A Parquet
    file is only readable once closed, so a killed run cannot be resumed from it: use csv/jsonl for that."""

    def __init__(self, path: Path, classes: list[str], resume: bool):
        try:
            import pyarrow as pa
        except ImportError:
            raise WbcError("Parquet output needs pyarrow: pip install pyarrow (or write .csv / .jsonl)") from None

        if resume:
            raise WbcError("--resume needs a csv or jsonl --out (a Parquet file is unreadable until the run ends)")
        if path.exists():
            raise WbcError(f"{path} already exists: choose another --out")
        self.path, self.classes, self.done, self.earlier = path, classes, set(), Earlier()
        self.schema = pa.schema([("path", pa.string()), ("class", pa.string()), ("probability", pa.float32()),
                                 *[(f"p_{c}", pa.float32()) for c in classes], ("review", pa.int8()), ("white_cell", pa.int8()),
                                 ("px_per_um", pa.float32()), ("scale", pa.string()), ("error", pa.string()),
                                 ("review_reason", pa.string()), ("distance", pa.float32()),
                                 ("colour_distance", pa.float32()), ("note", pa.string()), ("cells_seen", pa.int16())])
        self.tmp = path.with_name(f".{path.name}.partial")
        self.writer = None

    def write(self, outcomes: list[Outcome]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [row_of(o, self.classes) for o in outcomes]
        cols = {f.name: [None if r[f.name] == "" else r[f.name] for r in rows] for f in self.schema}
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.writer.write_table(pa.table(cols, schema=self.schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            os.replace(self.tmp, self.path)  # only a complete file gets the name


class ResultWriter:
    """Appends rows to a CSV or JSON Lines file; every batch is flushed and fsync'd."""

    def __new__(cls, path: Path, fmt: str, classes: list[str], resume: bool):
        if fmt == "parquet":
            return ParquetWriter(path, classes, resume)
        return super().__new__(cls)

    def __init__(self, path: Path, fmt: str, classes: list[str], resume: bool):
        self.path, self.fmt, self.classes = path, fmt, classes
        self.done: set[str] = set()
        self.earlier = Earlier()
        if path.exists() and path.stat().st_size:
            if not resume:
                raise WbcError(f"{path} already exists: pass --resume to continue that run, or choose another --out")
            if fmt == "csv":
                upgrade_csv(path, classes)
            self.done, keep, self.earlier = read_done(path, fmt, classes)
            with open(path, "r+b") as f:  # drop a torn last line
                f.truncate(keep)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", newline="", encoding="utf-8")
        if fmt == "csv" and self.f.tell() == 0:
            csv.writer(self.f).writerow(columns(classes))

    def write(self, outcomes: list[Outcome]) -> None:
        if self.fmt == "csv":
            w = csv.DictWriter(self.f, columns(self.classes))
            for o in outcomes:
                w.writerow(row_of(o, self.classes))
        else:
            for o in outcomes:
                self.f.write(json.dumps(row_of(o, self.classes)) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _measures_scale(px_per_um, spec) -> bool:
    """Does framing measure every image's red cells (no scale given, none in the model)?"""
    from wbc.image.framing import RunScale

    return (px_per_um is None or isinstance(px_per_um, RunScale)) and not spec.px_per_um


def run_collection(predictor, files: list[str], sink: Callable[[list[Outcome]], None], done: set[str] | None = None,
                   batch_size: int = 32, workers: int = 0, px_per_um=None, on_batch=None,
                   stream: Callable | None = None, earlier: Earlier | None = None) -> Summary:
    """Classify every file not in `done`, hand each batch of outcomes to `sink`, and count. Without `px_per_um`
    each image takes the run's scale unless its own red cells say strongly otherwise (`run_scale` over all `files`,
    so a resumed run frames as the first did; wbc.image.framing.image_scale). Rows wait until LAB_HOLD files are
    classified (or the run ends): a run then judged as a whole (far from every training source, or holding blasts) has
    every row flagged for review, and so has every row after the point a longer run first is (wbc.infer.predictor.flag_run)."""
    from wbc.image.framing import run_scale

    summary = Summary(lab=lab_check(predictor))
    for distance, label, colour in (earlier.cells if earlier else ()):  # a resumed run is judged with the rows already written
        summary.lab.add(distance, label, predictor.spec, colour)
    summary.lab.fired, summary.lab.blast_fired = bool(earlier and earlier.far), bool(earlier and earlier.blasts)
    summary.lab.colour_fired = bool(earlier and earlier.colours)
    todo = [f for f in files if f not in (done or set())]
    summary.skipped = len(files) - len(todo)
    px_per_um = px_per_um or (run_scale(files) if todo else None)
    if stream is None and workers <= 0 and len(todo) >= 64:
        predictor = predictor.beside_framing(_measures_scale(px_per_um, predictor.spec))  # the framing thread gets its core
    batches: Iterable[list[Outcome]] = (stream or classify_stream)(predictor, todo, batch_size, workers, px_per_um)
    held: list[Outcome] = []
    for outcomes in batches:
        held += outcomes
        for o in outcomes:
            if o.prediction is None:
                summary.failed += 1
                summary.failures.append((o.path, o.error or "unknown error"))
            else:
                summary.done += 1
                summary.labels[o.prediction.label] += 1
                summary.reasons.update(reason_kinds(o.prediction.review_reason))
                summary.several += o.prediction.several
                summary.lab.add(o.prediction.distance, o.prediction.label, predictor.spec, o.prediction.colour_distance)
        if summary.done + summary.failed >= LAB_HOLD:
            sink(_judged(held, summary.lab))
            summary.before_judged += 0 if summary.lab.judge() else sum(o.prediction is not None for o in held)
            held = []
        if on_batch:
            on_batch(len(outcomes))
    if held:
        sink(_judged(held, summary.lab))
    return summary


LAB_HOLD = 64  # rows a run holds back until its cells are judged as a whole: a stream cannot take back a row it wrote


def _judged(outcomes: list[Outcome], lab) -> list[Outcome]:
    flag_run([o.prediction for o in outcomes if o.prediction is not None], lab)
    return outcomes


def run_to_file(predictor, files: list[str], out: Path | None, fmt: str | None, resume: bool = False,
                sink: Callable[[list[Outcome]], None] | None = None, **run) -> Summary:
    """run_collection with every batch streamed to `out` (csv, jsonl or parquet; None: no file) and to `sink`;
    with `resume`, the files already in `out` are skipped. `run`: run_collection's other arguments. A run judged
    as a whole once rows were out (a longer run, or one judged only with the rows of a resume) has those rows of
    `out` flagged at its end (`mend_file`), so no row of the file stands unflagged in a judged run."""
    check_scale(run.get("px_per_um"))
    writer = ResultWriter(Path(out), format_of(Path(out), fmt), predictor.classes, resume) if out else None

    def both(batch: list[Outcome]) -> None:
        if writer:
            writer.write(batch)
        if sink:
            sink(batch)

    try:
        summary = run_collection(predictor, files, both, writer.done if writer else None, earlier=writer.earlier if writer else None, **run)
    finally:
        if writer:
            writer.close()
    if writer and summary.lab.judge() and (summary.before_judged or summary.skipped):
        summary.mended = mend_file(Path(out), format_of(Path(out), fmt), summary.lab)
    return summary


def mend_rows(rows: Iterable[dict], lab) -> Iterator[tuple[dict, bool]]:
    """(row, changed) for result rows of a run `lab` judges: a classified row that lacks one of the run's reasons gets
    it, and `review` 1 (rows written before the run was judged, by this run or the one it resumes)."""
    reasons = lab.reasons()
    for r in rows:
        reason = r.get("review_reason") or ""
        mended = with_reasons(reason, run_reasons_of(r.get("class"), r.get("scale"), reasons, bool(reason)))  # flagged: a reason
        if mended != reason:
            r["review"], r["review_reason"] = 1, mended
        yield r, mended != reason


def mend_file(path: Path, fmt: str, lab) -> int:
    """Flag, in place and atomically (a new file moved over the old), the rows of `path` its judged run wrote before
    it was judged; how many. Streams csv and jsonl (a file of a million rows is not held in memory)."""
    from wbc._util.io import atomic_save

    changed = 0

    def rewrite(tmp: str) -> None:
        nonlocal changed
        with open(path, newline="", encoding="utf-8") as src, open(tmp, "w", newline="", encoding="utf-8") as dst:
            if fmt == "csv":
                reader = csv.DictReader(src)
                w = csv.DictWriter(dst, reader.fieldnames or [])
                w.writeheader()
                for r, c in mend_rows(reader, lab):
                    w.writerow(r)
                    changed += c
            else:
                for r, c in mend_rows((json.loads(line) for line in src if line.strip()), lab):
                    dst.write(json.dumps(r) + "\n")
                    changed += c
            dst.flush()
            os.fsync(dst.fileno())

    if fmt == "parquet":
        return _mend_parquet(path, lab)
    atomic_save(path, rewrite)  # unchanged rows are written back as they were read
    return changed


def _mend_parquet(path: Path, lab) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wbc._util.io import atomic_save

    table = pq.read_table(path)
    rows = [{"class": c, "review": v, "review_reason": r, "scale": k} for c, v, r, k in
            zip(*(table.column(k).to_pylist() for k in ("class", "review", "review_reason", "scale")))]
    mended = list(mend_rows(rows, lab))
    changed = sum(c for _, c in mended)
    if changed:
        for k in ("review", "review_reason"):
            i = table.schema.get_field_index(k)
            table = table.set_column(i, table.schema.field(i), pa.array([r[k] for r, _ in mended], table.schema.field(i).type))
        atomic_save(path, lambda tmp: pq.write_table(table, tmp))
    return changed


def default_workers() -> int:
    """Decoder processes: none on 2 cores or fewer, where one thread frames instead (`wbc bench`: a decoder process
    competing with ONNX Runtime's threads for 2 cores halved files/s, its start-up included), half the cores beyond that."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else cores // 2
