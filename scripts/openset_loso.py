"""Choose the open-set review decision by measurement, leave one source out (issue 17).

    python scripts/openset_loso.py extract --fold shipped --fold no_pbc --fold no_kaggle   # features, once
    python scripts/openset_loso.py choose [--out reports/openset]                          # scores + operating point

Three fold models, each trained on two sources and never on the third:
  shipped    Kaggle + PBC (the shipped model)     held out: Munich (BLAST unknown to it)
  no_pbc     Kaggle + Munich (runs/fold_no_pbc)   held out: PBC (BASOPHIL, ERYTHROBLAST, IG, PLATELET unknown)
  no_kaggle  PBC + Munich (runs/fold_no_kaggle)   held out: Kaggle (every class known: shift only)
For each: features of the model's own training cells (statistics), of its validation cells (the quantiles
the operating point is written in) and of the held-out source's train split (where the operating point is
chosen) and test split (figures only, never chosen on), framed as `wbc predict` frames them (scale
measured per image). Scores compared: top softmax probability, energy, Mahalanobis distance on the backbone
features (all dimensions, shrunk covariance), on the head's last hidden layer, and k-nearest-neighbour cosine.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from wbc.data.scan import scan
from wbc.data.sources import load_rows, parse_sources, subsample
from wbc.infer.predictor import load_model, shipped_model_path
from wbc.models.openset import FeatureDistance
from wbc.training.config import TrainConfig
from wbc.training.train import loader, review_threshold

DATA = {"kaggle": "../shared/data/blood-cells", "pbc": "../shared/data/pbc", "munich": "../shared/data/munich-aml"}
FOLDS = {"shipped": (None, "munich"), "no_pbc": ("runs/fold_no_pbc/model.safetensors", "pbc"),
         "no_kaggle": ("runs/fold_no_kaggle/model.safetensors", "kaggle")}
PER_CLASS = 500  # training/held-out cells a class: the Kaggle images are copies of ~350 cells, more adds little


@torch.no_grad()
def run_model(model, batches) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = [], []
    for x in batches:
        f = model.features(x.float())
        feats.append(f)
        logits.append(model.head(f))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def measured_batches(predictor, paths, bs=32):
    for i in range(0, len(paths), bs):
        yield torch.stack([predictor.frame(p).pixels for p in paths[i : i + bs]])


def held_out_rows(name: str, split: str, seed: int = 0) -> list[tuple[str, str]]:
    """(path, class) of a held-out source's split, at most PER_CLASS a class (junk files skipped)."""
    s = scan(DATA[name], check=False)
    by = defaultdict(list)
    for r in s.records:
        if r.split.upper() == split and not r.path.name.startswith("."):
            by[r.label].append(str(r.path))
    out = []
    for label, files in sorted(by.items()):
        random.Random(seed).shuffle(files)
        out += [(f, label) for f in files[:PER_CLASS]]
    return out


def extract(fold: str, out: Path) -> None:
    path, held = FOLDS[fold]
    predictor = load_model(path or shipped_model_path())
    model, meta = predictor.model, predictor.meta
    conf = meta["info"]["config"]
    cfg = TrainConfig(**{k: v for k, v in conf.items() if k in ("size", "field_um", "val_fraction", "seed")})
    manifests = [m for m in conf["manifest"] if not m.startswith("pbc=runs/")]
    rows, infos = load_rows(parse_sources(conf["data"], manifests), out / f"{fold}_run", cfg.val_fraction, cfg.seed)
    classes = predictor.classes
    arrays = {}
    for split in ("train", "val"):
        mine = [r for r in rows if r.split == split]
        if split == "train":
            mine = subsample(mine, PER_CLASS, 0)
        dl = loader(mine, classes, infos, cfg, augment=False)
        f, lg = run_model(model, (x for x, _ in dl))
        arrays[f"{split}_feats"], arrays[f"{split}_logits"] = f, lg
        arrays[f"{split}_y"] = np.array([classes.index(r.label) for r in mine])
        arrays[f"{split}_source"] = np.array([r.source for r in mine])
        print(fold, split, len(mine), flush=True)
    test_split = "TEST"
    for split in ("TRAIN", test_split):
        items = held_out_rows(held, split)
        f, lg = run_model(model, measured_batches(predictor, [p for p, _ in items]))
        arrays[f"held_{split.lower()}_feats"], arrays[f"held_{split.lower()}_logits"] = f, lg
        arrays[f"held_{split.lower()}_label"] = np.array([lab for _, lab in items])
        print(fold, held, split, len(items), flush=True)
    np.savez_compressed(out / f"{fold}.npz", classes=np.array(classes), temperature=predictor.spec.temperature, **arrays)


def scorers(d) -> dict:
    """name -> function(feats, logits) giving an 'unlike the known cells' score (higher: stranger)."""
    T = float(d["temperature"])
    C = len(d["classes"])
    maha = FeatureDistance(d["train_feats"].shape[1], C)
    maha.fit(torch.from_numpy(d["train_feats"]), torch.from_numpy(d["train_y"]))
    tr = d["train_feats"] / np.linalg.norm(d["train_feats"], axis=1, keepdims=True)

    def knn(f, lg, k=10):
        q = f / np.linalg.norm(f, axis=1, keepdims=True)
        return -np.sort(q @ tr.T, axis=1)[:, -k]

    def softmax(lg):
        z = lg / T
        z = z - z.max(1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    return {
        "max softmax": lambda f, lg: -softmax(lg).max(1),
        "energy": lambda f, lg: -T * np.log(np.exp(lg / T - (lg / T).max(1, keepdims=True)).sum(1)) - (lg / T).max(1) * T,
        "mahalanobis": lambda f, lg: maha(torch.from_numpy(f).float()).min(1).values.numpy(),
        "knn cosine": knn,
    }


def held_truth(d, part: str):
    """(known mask, correct mask) of a held-out part: a cell of a class the model lacks can only be caught."""
    classes = list(d["classes"])
    labels = d[f"{part}_label"]
    known = np.array([lab in classes for lab in labels])
    pred = np.array(classes)[d[f"{part}_logits"].argmax(1)]
    return known, known & (pred == labels)


def softmax(lg: np.ndarray, T: float) -> np.ndarray:
    z = lg / T - (lg / T).max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def fold_view(d) -> dict:
    """What the operating point reads of one fold: validation (own sources) and the held-out parts."""
    T = float(d["temperature"])
    maha = scorers(d)["mahalanobis"]
    v = {"val_probs": softmax(d["val_logits"], T), "val_y": d["val_y"], "val_dist": maha(d["val_feats"], d["val_logits"])}
    for part in ("held_train", "held_test"):
        known, correct = held_truth(d, part)
        v[part] = {"probs": softmax(d[f"{part}_logits"], T), "dist": maha(d[f"{part}_feats"], d[f"{part}_logits"]),
                   "known": known, "correct": correct}
    return v


def outcome(v: dict, part: str, accuracy: float, q_near: float, q_far: float, far_factor: float) -> dict:
    """The held-out part under an operating point written in the fold model's own validation terms."""
    t_conf = review_threshold(torch.from_numpy(v["val_probs"]), torch.from_numpy(v["val_y"]), accuracy)
    near = np.quantile(v["val_dist"], q_near)
    far = np.quantile(v["val_dist"], q_far) * far_factor
    h = v[part]
    unid = h["dist"] > far
    flagged = (h["probs"].max(1) < t_conf) | (h["dist"] > near) | unid
    ok = ~flagged
    unknown = ~h["known"]
    return {"unflagged_share": float(ok.mean()), "unflagged_known_share": float(ok[h["known"]].mean()),
            "accuracy_unflagged": float(h["correct"][ok].mean()) if ok.any() else 1.0,
            "unknown_missed": float((ok & unknown).sum() / unknown.sum()) if unknown.any() else None,
            "known_unidentified": float(unid[h["known"]].mean()), "unknown_unidentified": float(unid[unknown].mean()) if unknown.any() else None}


GRID = {"accuracy": [0.95, 0.97, 0.98, 0.99, 0.995], "q_near": [0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0],
        "q_far": [0.99, 0.999, 1.0], "far_factor": [1.0, 1.25, 1.5, 2.0]}
MIN_VAL_COVERAGE = 0.5  # an operating point must leave at least half of the home validation cells unflagged


def val_coverage(v: dict, accuracy: float, q_near: float) -> float:
    t_conf = review_threshold(torch.from_numpy(v["val_probs"]), torch.from_numpy(v["val_y"]), accuracy)
    near = np.quantile(v["val_dist"], q_near)
    return float(((v["val_probs"].max(1) >= t_conf) & (v["val_dist"] <= near)).mean())


def score_table(d) -> dict:
    known, correct = held_truth(d, "held_train")
    out = {}
    for name, fn in scorers(d).items():
        score = fn(d["held_train_feats"], d["held_train_logits"])
        out[name] = {"auroc_error_or_unknown": float(roc_auc_score(~correct, score)),
                     "auroc_unknown": float(roc_auc_score(~known, score)) if (~known).any() else None}
    return out


def grid(views: dict) -> list[dict]:
    rows = []
    for a in GRID["accuracy"]:
        for qn in GRID["q_near"]:
            held = {f: outcome(v, "held_train", a, qn, 1.0, 10.0) for f, v in views.items()}
            rows.append({"review_accuracy": a, "near_quantile": qn, "held_train": held,
                         "worst_accuracy": min(r["accuracy_unflagged"] for r in held.values()),
                         "worst_coverage": min(r["unflagged_known_share"] for r in held.values()),
                         "val_coverage_min": min(val_coverage(v, a, qn) for v in views.values())})
    return rows


def choose(out: Path, folds: list[str]) -> None:
    """Compare the scores (AUROC on the held-out train splits); then the operating point: the one with the best
    worst-fold accuracy of the unflagged held-out cells (>= 97%: the most left unflagged) among those that leave at
    least MIN_VAL_COVERAGE of each fold's home validation unflagged; reported on the held-out test splits."""
    views, table = {}, {}
    for fold in folds:
        d = dict(np.load(out / f"{fold}.npz"))
        table[fold] = score_table(d)
        views[fold] = fold_view(d)
    every = grid(views)
    rows = [r for r in every if r["val_coverage_min"] >= MIN_VAL_COVERAGE] or every
    held97 = [r for r in rows if r["worst_accuracy"] >= 0.97]
    best = max(held97, key=lambda r: r["worst_coverage"]) if held97 else max(rows, key=lambda r: (r["worst_accuracy"], r["worst_coverage"]))
    a, qn = best["review_accuracy"], best["near_quantile"]
    fars = []
    for qf in GRID["q_far"]:
        for ff in GRID["far_factor"]:
            held = {f: outcome(v, "held_train", a, qn, qf, ff) for f, v in views.items()}
            fars.append({"q_far": qf, "far_factor": ff, "known_unidentified_max": max(r["known_unidentified"] for r in held.values()),
                         "unknown_unidentified": {f: r["unknown_unidentified"] for f, r in held.items()}})
    result = {"scores": table, "holds_97_on_every_fold": bool(held97), "chosen": best, "far_grid": fars,
              "held_test": {f: outcome(v, "held_test", a, qn, 1.0, 10.0) for f, v in views.items()}}
    (out / "choice.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["extract", "choose"])
    ap.add_argument("--fold", action="append", default=[])
    ap.add_argument("--out", default="reports/openset")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    folds = a.fold or list(FOLDS)
    if a.what == "extract":
        for f in folds:
            extract(f, out)
    else:
        choose(out, folds)


if __name__ == "__main__":
    main()
