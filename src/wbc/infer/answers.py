"""The labels a classifier's answer can carry besides its classes, the kinds of its review reasons, and the files
answers are written to: plain constants and string functions, so the review station, the differential, a run's
summary and the command line's checks read them without loading a network."""

from pathlib import Path

from wbc.errors import WbcError

NO_WHITE_CELL = "NO_WHITE_CELL"  # the label of an image the no-white-cell rule turns away
UNIDENTIFIED = "UNIDENTIFIED"  # a cell far from every known type: counted apart, never folded into a type


def reason_kinds(review_reason: str | None) -> list[str]:
    """The kind of each reason of a review flag ("low confidence (0.91 < 0.94); overexposed (...)" -> ["low confidence",
    "overexposed"]): what runs and evaluations count."""
    return [r.split(" (")[0].split(":")[0] for r in (review_reason or "").split("; ") if r]


IMAGE_FAULTS = {  # reasons that belong to the images, not to a cell: a run mostly so is told what to change
    "overexposed": "set the camera so the background is not clipped white",
    "greyscale image": "save the camera's colour images",
    "noisy image": "give more light or a lower camera gain",
    "low resolution": "use a 40x-100x objective (3 px/um or finer)",
    "heavily compressed JPEG": "save at JPEG quality 50 or more, or as PNG/TIFF",
    "pale stain": "check the staining (time, fresh stain, buffer pH) and set the camera's contrast and saturation to neutral",
}


def fault_warning(kinds: dict, images: int) -> str | None:
    """Said once for a run (`kinds`: each reason kind with the answers it flagged, of `images`) where half of its images
    or more, three at least, share a fault of the images themselves; None otherwise."""
    said = [f"{k} on {n} of {images} images: {fix}" for k, fix in IMAGE_FAULTS.items()
            for n in [kinds.get(k, 0)] if n >= 3 and n >= 0.5 * images]
    return ("; ".join(said) + ", then run again (their answers are all flagged for review)") if said else None


FORMATS = ("csv", "jsonl", "parquet")  # a results file's formats, streamed a row at a time
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def format_of(path: Path | None, fmt: str | None) -> str:
    """The format of a results file: `fmt` if given, else the file's suffix. Another suffix is refused, not written
    as csv under it (`results.xlsx` or `results.json` holding csv text would open as a broken file)."""
    if fmt:
        if fmt not in FORMATS:
            raise WbcError(f"--format for a results file must be csv, jsonl or parquet, not '{fmt}'")
        return fmt
    if path is None:
        return "csv"
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        hint = {".xlsx": " (a spreadsheet opens the .csv)", ".xls": " (a spreadsheet opens the .csv)",
                ".json": " (.jsonl: one JSON object a line, streamed)"}.get(path.suffix.lower(), "")
        raise WbcError(f"--out {path.name}: results are written to a .csv, .jsonl or .parquet file{hint}; "
                       f"or give --format csv to keep the name")
    return kind
