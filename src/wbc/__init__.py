"""wbc: white blood cell classification from blood-smear images.

Public API::

    import wbc
    model = wbc.load_model()              # the shipped model, or a path
    results = model.predict(["cell.jpeg"])  # one Prediction an image; a bad file raises wbc.WbcError
    outcomes = wbc.classify(["folder/", "more/*.png"], out="results.csv")  # collections: bad files skipped
"""

from pathlib import Path

from wbc._version import __version__
from wbc.errors import WbcError


def load_model(path=None, device=None):
    """Load a wbc model file (default: the model shipped inside the package)."""
    from wbc.infer.predictor import load_model as _load

    return _load(path, device=device)


def classify(inputs, model=None, out=None, resume=False, px_per_um=None, batch_size=32, workers=0):
    """Classify every image among `inputs` (files, folders, globs). Returns one wbc.infer.batch.Outcome a file,
    in order: `.prediction` (a Prediction) or `.error` (why the file was skipped). With `out` (a .csv, .jsonl or
    .parquet path) the rows are also streamed there; `resume` continues an interrupted run into it. Without
    `px_per_um` each image takes the run's scale unless its own red cells say strongly otherwise (as `wbc predict`)."""
    from wbc.data.collect import collect_images
    from wbc.infer.answers import format_of
    from wbc.infer.batch import Outcome, run_to_file
    from wbc.infer.predictor import flag_run

    if out is not None:
        format_of(Path(out), None)  # a results file of another kind is refused before the model loads
    predictor = model if hasattr(model, "predict_framed") else load_model(model)
    found = collect_images([str(i) for i in ([inputs] if isinstance(inputs, str) else inputs)])
    outcomes = [Outcome(p, None, why) for p, why in found.problems]
    summary = run_to_file(predictor, found.files, out, None, resume, outcomes.extend, batch_size=batch_size, workers=workers,
                          px_per_um=px_per_um)
    flag_run([o.prediction for o in outcomes if o.prediction is not None], summary.lab)  # the answers given before it was judged
    return outcomes


__all__ = ["__version__", "WbcError", "classify", "load_model"]
