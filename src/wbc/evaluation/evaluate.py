"""Honest evaluation of a model on one split of a folder-per-class set.

Metrics from scikit-learn; pictures with matplotlib; where a split manifest gives the source
cell of each image, accuracy per source cell with a bootstrap interval, because the Kaggle TEST
split is ~35 copies each of only 71 cells (620 MONOCYTE images are 4 cells).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from wbc._util.io import atomic_save, atomic_write_text
from wbc._util.progress import or_null
from wbc.data.labels import Labelled, match_classes  # noqa: F401  (match_classes: part of this module's surface)
from wbc.data.split import read_manifest
from wbc.evaluation.risk import abnormal_figures, plot_risk_coverage, risk_coverage
from wbc.image.framing import run_scale
from wbc.infer.answers import reason_kinds
from wbc.infer.predictor import (
    NO_WHITE_CELL,
    UNIDENTIFIED,
    Predictor,
    lab_check,
    strangeness,
)
from wbc.training.metrics import balanced


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = float((pred[m] == y[m]).mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            table.append({"lo": float(lo), "hi": float(hi), "n": int(m.sum()), "accuracy": acc, "confidence": c})
    return float(ece), table


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def per_source(paths: list[Path], y: np.ndarray, pred: np.ndarray, manifest: str | None, data: str, classes) -> dict | None:
    if not manifest:
        return None
    group_of = {str(Path(r.path).resolve()): r.group for r in read_manifest(manifest, data)}
    groups = [group_of.get(str(Path(p).resolve())) for p in paths]
    if sum(g is not None for g in groups) < len(paths) * 0.9:
        return None  # the manifest does not describe this split
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if g is not None:
            by[g].append(i)
    acc = np.array([np.mean(pred[ix] == y[ix]) for ix in by.values()])
    vote = np.array([np.bincount(pred[ix], minlength=len(classes)).argmax() == y[ix[0]] for ix in by.values()], float)
    per_class = defaultdict(list)
    for ix, a in zip(by.values(), acc):
        per_class[classes[y[ix[0]]]].append(a)
    lo, hi = bootstrap_ci(acc)
    return {
        "n_sources": len(by),
        "mean_accuracy_per_source": float(acc.mean()),
        "ci95": [lo, hi],
        "majority_vote_accuracy": float(vote.mean()),
        "per_class": {c: {"sources": len(v), "mean_accuracy": float(np.mean(v))} for c, v in sorted(per_class.items())},
    }


def plots(out: Path, classes, y, pred, probs, paths, calib_table, rows: list[int] | None = None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wbc.image.decode import decode

    files = {}

    def save(fig, name):
        atomic_save(out / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(fig)
        files[name.rsplit(".", 1)[0]] = name

    rows = list(range(len(classes))) if rows is None else rows
    cm = confusion_matrix(y, pred, labels=range(len(classes)))[rows]
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(classes), 1.2 + 0.6 * len(rows)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [classes[k] for k in rows])
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    save(fig, "confusion_matrix.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot([b["confidence"] for b in calib_table], [b["accuracy"] for b in calib_table], "o-", label="model")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend()
    save(fig, "reliability.png")

    wrong = np.flatnonzero(pred != y)
    if len(wrong):
        pick = wrong[np.argsort(-probs[wrong].max(1))][:36]  # the most confident mistakes first
        cols = 6
        rows = math.ceil(len(pick) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.1), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, pick):
            ax.imshow(decode(paths[i]))  # as the model read it: turned upright, any depth
            ax.set_title(f"pred {classes[pred[i]][:4]} {probs[i].max():.2f}\ntrue {classes[y[i]][:4]}", fontsize=8, color="crimson")
        fig.suptitle(f"Misclassified cells ({len(wrong)} in all; most confident first)")
        save(fig, "misclassified.png")
    return files


def answers(predictor: Predictor, paths: list, batch_size: int, on_batch, px_per_um) -> tuple[np.ndarray, list, list]:
    """(probabilities, each image's Framed, each image's Prediction as a user gets it)."""
    dist: list = []
    probs_t, framed = predictor.predict_framed(paths, batch_size, on_batch, px_per_um, distances=dist)
    preds = predictor.to_predictions(probs_t, [str(path) for path in paths], framed, dist)
    return probs_t.numpy(), framed, preds


def run_check(predictor: Predictor, preds: list, odd: dict[str, list]) -> dict:
    """The set's cells (those of the types the model lacks included) judged as one run, as `wbc predict` judges a
    folder: far from every training source, or holding blasts, every answer of it is flagged for review. The
    figures elsewhere are the cells' own flags, which say how well the model knows its cells; this says what a
    user running the set as one folder sees on top."""
    run = lab_check(predictor, [*preds, *(p for ps in odd.values() for p in ps)])
    run.judge()
    return {"cells": run.cells, "unlike_share": run.share, "expected": run.expected, "far": run.fired,
            "colour_cells": run.coloured, "colour_share": run.colour_share, "colour_expected": run.colour_expected,
            "colours_unlike": run.colour_fired, "blasts": run.blasts, "classified": run.classified, "blast_run": run.blast_fired,
            "every_answer_flagged": run.fired or run.colour_fired or run.blast_fired, "warning": run.warning()}


def dropped(paths, y: np.ndarray, preds: list, classes) -> list[dict]:
    """The set's real cells answered "no white cell found": each with its class, why, and the review flag's reason
    (None: dropped in silence; what to look at first)."""
    return [{"path": str(path), "class": classes[k], "why": p.note, "review_reason": p.review_reason}
            for path, k, p in zip(paths, y, preds) if p.label == NO_WHITE_CELL]


def review_figures(predictor: Predictor, preds: list, y: np.ndarray, classes) -> dict:
    """The flag as the user sees it: every reason, UNIDENTIFIED, and the accuracy of what is left unflagged."""
    right = np.array([p.label == classes[k] for p, k in zip(preds, y)])
    unflagged = np.array([not p.review and p.label not in (UNIDENTIFIED, NO_WHITE_CELL) for p in preds])
    reasons = Counter(k for p in preds for k in reason_kinds(p.review_reason))
    score = np.array([strangeness(p.probability, p.distance, predictor.spec, p.label) for p in preds])
    spec = predictor.spec
    return {"threshold": spec.review_threshold, "always_reviewed": spec.always_review, "near_distance": spec.near_distance or None, "far_distance": spec.far_distance or None,
            "flagged": int(sum(p.review for p in preds)), "flagged_share": float(np.mean([p.review for p in preds])),
            "unflagged_share": float(unflagged.mean()), "accuracy_as_answered": float(right.mean()),
            "accuracy_unflagged": float(right[unflagged].mean()) if unflagged.any() else None,
            "unidentified": int(sum(p.label == UNIDENTIFIED for p in preds)), "reasons": dict(reasons),
            "distance_measured": any(p.distance is not None for p in preds),
            "risk_coverage": risk_coverage(right, score)}


def evaluate(predictor: Predictor, data: str, split: str, out: Path | None = None, ignore_unknown: bool = False,
             manifest: str | None = None, batch_size: int = 32, px_per_um: float | None = None, progress=None,
             abnormal: bool = False) -> dict:
    """Figures for one split. A set with fewer classes than the model (the Kaggle TEST has 4 of 8) gets
    two accuracies: over the model's full output (a class outside the set counts as wrong) and
    restricted to the set's classes (the best of those wins). `abnormal`: class folders the model lacks
    hold cells it must not pass as a known type (blasts to a normal-type model): reported as caught or missed."""
    classes = predictor.classes
    progress = or_null(progress)
    lab = match_classes(data, split, classes, ignore_unknown or abnormal, progress)
    task = progress.add_task(f"evaluating {split}", total=len(lab.paths))
    px_per_um = px_per_um or run_scale(lab.paths)  # as `wbc predict` on a folder: the cells take the set's scale
    probs, framed, preds = answers(predictor, lab.paths, batch_size, lambda n: progress.advance(task, n), px_per_um)
    odd = {name: answers(predictor, paths, batch_size, None, px_per_um)[2] for name, paths in sorted(lab.unknown.items())} if abnormal and lab.unknown else {}
    run = run_check(predictor, preds, odd)  # the set as one run, as `wbc predict` judges a folder
    y, pred = lab.y, probs.argmax(1)
    in_set = sorted(set(int(k) for k in y))
    restricted = np.array(in_set)[probs[:, in_set].argmax(1)]
    labels = range(len(classes))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    ece, calib = expected_calibration_error(probs, y)
    scales, kinds = np.array([f.px_per_um for f in framed]), Counter(f.scale for f in framed)
    result = {
        "model": str(predictor.path),
        "model_sha256": predictor.sha256,
        "data": str(data),
        "split": split.upper(),
        "images": int(len(y)),
        "classes_in_set": [classes[k] for k in in_set],
        "class_folders_read_as": lab.read_as or {},
        "skipped_bad_files": lab.skipped_bad,
        "ignored_unknown_class_images": 0 if abnormal else lab.ignored_unknown,
        "accuracy": float(accuracy_score(y, pred)),
        "accuracy_in_set_classes": float(accuracy_score(y, restricted)),
        "predicted_outside_set": int(np.sum(~np.isin(pred, in_set))),
        "balanced_accuracy": balanced(y, pred),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=in_set, zero_division=0)),
        "per_class": {classes[k]: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(sup[k])}
                      for k in in_set},
        "confusion_matrix": {"rows": [classes[k] for k in in_set], "columns": classes,
                             "rows_true": confusion_matrix(y, pred, labels=labels)[in_set].tolist()},
        "ece": ece,
        "calibration_bins": calib,
        "review": review_figures(predictor, preds, y, classes),
        "no_white_cell": int(sum(p.label == NO_WHITE_CELL for p in preds)), "no_white_cell_cells": dropped(lab.paths, y, preds, classes),
        "lab": run,
        "scale": {"px_per_um_median": float(np.median(scales)), "p5": float(np.percentile(scales, 5)), "p95": float(np.percentile(scales, 95)),
                  **{how: kinds[how] for how in ("measured", "given", "corrected", "run", "cell", "assumed")}},
        "per_source_cell": per_source(lab.paths, y, pred, manifest, data, classes),
    }
    if odd:
        result["abnormal"] = {name: abnormal_figures(ps) for name, ps in odd.items()}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        result["files"] = plots(out, classes, y, pred, probs, lab.paths, calib, in_set)
        result["files"]["risk_coverage"] = risk_plot(out, result)
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
        atomic_write_text(out / "report.md", report_markdown(result))
    return result


def risk_plot(out: Path, result: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result["review"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    point = {result["split"]: (r["unflagged_share"], r["accuracy_unflagged"])} if r["accuracy_unflagged"] is not None else None
    plot_risk_coverage(ax, {result["split"]: r["risk_coverage"]}, point)
    atomic_save(out / "risk_coverage.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return "risk_coverage.png"


def why_flagged(review: dict) -> str:
    """Each review reason with the number of answers it flagged, most first ("none" when none is flagged)."""
    reasons = sorted(review.get("reasons", {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {n:,}" for k, n in reasons) or "none"


def report_markdown(r: dict) -> str:
    digest = f" (sha256 `{r['model_sha256'][:16]}`)" if r.get("model_sha256") else ""
    lines = [f"# Evaluation: {r['split']}", "", f"- model: `{r['model']}`{digest}", f"- data: `{r['data']}` split {r['split']}, "
             f"{r['images']} images ({r['skipped_bad_files']} bad files skipped)"
             + "".join(f"; folder {f} read as {c}" for f, c in r.get("class_folders_read_as", {}).items()),
             f"- accuracy **{r['accuracy']:.4f}** over the model's {len(r['confusion_matrix']['columns'])} classes, "
             f"{r['accuracy_in_set_classes']:.4f} restricted to the set's {len(r['classes_in_set'])}; balanced accuracy "
             f"{r['balanced_accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, ECE {r['ece']:.4f}; as answered {r['review']['accuracy_as_answered']:.4f} "
             "(the figures above take each image's most probable class; here a cell answered \"no white cell found\" or UNIDENTIFIED is wrong)",
             f"- review flag (top probability < {r['review']['threshold']:.3f}"
             + (f", or distance to the known types > {r['review']['near_distance']:.2f}" if r['review']['near_distance'] else "")
             + f"; why: {why_flagged(r['review'])}): {r['review']['flagged']} images ({r['review']['flagged_share']:.1%}); the {r['review']['unflagged_share']:.1%} "
             f"left unflagged {_pct(r['review']['accuracy_unflagged'])} right; UNIDENTIFIED {r['review']['unidentified']}; "
             f"AURC {_num(r['review']['risk_coverage']['aurc'])}",
             f"- no white cell found: {r['no_white_cell']} images", *_dropped_lines(r), *_abnormal_lines(r), *_lab_lines(r), "",
             "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, m in r["per_class"].items():
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    ps = r.get("per_source_cell")
    if ps:
        lines += ["", f"Per source cell ({ps['n_sources']} cells): mean accuracy {ps['mean_accuracy_per_source']:.4f} "
                  f"(bootstrap 95% CI {ps['ci95'][0]:.3f}-{ps['ci95'][1]:.3f}), majority vote {ps['majority_vote_accuracy']:.4f}"]
    lines += [""] + [f"![{k}]({v})" for k, v in r.get("files", {}).items()]
    return "\n".join(lines) + "\n"


def _lab_lines(r: dict) -> list[str]:
    lab = r.get("lab") or {}
    if lab.get("unlike_share") is None:
        return []
    why = [w for w, on in (("it lies out of the model's world", lab["far"]), ("its stain and light are unlike the training labs'",
                                                                              lab.get("colours_unlike")),
                            (f"{lab['blasts']} of its cells were answered BLAST", lab["blast_run"])) if on]
    colours = (f"; in colours unlike every training source's: {lab['colour_share']:.1%} of {lab['colour_cells']} "
               f"({lab['colour_expected']:.1%} on the model's validation)") if lab.get("colour_share") is not None else ""
    return [f"- cells unlike every training source: {lab['unlike_share']:.1%} of {lab['cells']} ({lab['expected']:.1%} on the model's "
            f"validation){colours}" + (f"; **as one run every answer would be flagged: {' and '.join(why)}** (the figures above are "
                                       f"the cells' own flags)" if why else "")]


def _dropped_lines(r: dict, most: int = 20) -> list[str]:
    cells = r.get("no_white_cell_cells", [])
    lines = [f"  - `{c['path']}` ({c['class']}): {c['why']}; " + (f"flagged: {c['review_reason']}" if c.get("review_reason") else "**not flagged**")
             for c in cells[:most]]
    return lines + ([f"  - ... and {len(cells) - most} more (metrics.json, no_white_cell_cells)"] if len(cells) > most else [])


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _abnormal_lines(r: dict) -> list[str]:
    return [f"- **{name}** (a type the model lacks): {a['images']} cells, {a['unidentified']} UNIDENTIFIED, {a['flagged']} flagged, "
            f"**{a['missed_unflagged']} passed as an unflagged known type**, {a['dropped_no_white_cell']} dropped as no white cell "
            f"(missed {_pct(a['missed_share'])})" for name, a in r.get("abnormal", {}).items()]
