"""Several sources, eight classes, adaptation: a tiny real run through the CLI.

train on Kaggle + PBC (a few dozen images of each) -> the model file records both sources ->
evaluate on a 4-class set reports both accuracies -> predict -> adapt to unlabelled images of one
source (statistics change, scale fixed, provenance recorded) -> save/load and ONNX round trip.
"""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import PBC_CLASSES, run_cli

from wbc.data.sources import Row, balanced_weights, parse_sources
from wbc.errors import WbcError
from wbc.infer.predictor import load_model
from wbc.models.io import load_model_file, read_metadata


@pytest.fixture(scope="module")
def two_source_run(tmp_path_factory, tiny_kaggle, tiny_pbc, wbc_cache):
    run = tmp_path_factory.mktemp("multi") / "run"
    p = run_cli("train", "--data", f"kaggle={tiny_kaggle}", "--data", f"pbc={tiny_pbc}", "--out", str(run), "--size", "64",
                "--head", "32", "--round1-epochs", "3", "--round2-epochs", "1", "--epoch-size", "32", "--workers", "0",
                "--val-fraction", "0.25")
    assert "kaggle:" in p.stderr and "pbc:" in p.stderr
    return run


def test_model_file_records_every_source(two_source_run):
    meta = read_metadata(two_source_run / "model.safetensors")
    assert meta["spec"]["classes"] == PBC_CLASSES  # the union: PBC's eight hold Kaggle's four
    assert meta["spec"]["field_um"] == 24.0 and meta["spec"]["input_size"] == [64, 64]
    sources = meta["info"]["sources"]
    assert set(sources) == {"kaggle", "pbc"}
    for name, s in sources.items():
        assert len(s["manifest_sha256"]) == 64 and (two_source_run / "manifests" / f"{name}.csv").is_file()
        assert sum(s["counts"]["train"].values()) > 0 and sum(s["counts"]["val"].values()) > 0
    assert set(sources["kaggle"]["counts"]["train"]) == {"EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"}
    assert 5.5 < sources["kaggle"]["px_per_um"] < 8.5 and 9.5 < sources["pbc"]["px_per_um"] < 12.5
    val = meta["info"]["metrics"]["val"]
    assert set(val["per_source"]) == {"kaggle", "pbc"}
    assert val["review"]["threshold"] == meta["spec"]["review_threshold"]
    assert val["review"]["always_reviewed"] == meta["spec"]["always_review"]  # the classes its sure answers did not vouch for
    assert all(right < 0.97 * answers for right, answers in meta["spec"]["always_review"].values())


def test_evaluate_a_four_class_set_reports_both_accuracies(two_source_run, tiny_kaggle, tmp_path):
    out = tmp_path / "eval.json"
    p = run_cli("evaluate", "--model", str(two_source_run / "model.safetensors"), "--data", str(tiny_kaggle), "--split", "TEST",
                "--out", str(tmp_path / "rep"), "--json", str(out))
    assert "restricted to its 4 classes" in p.stderr.replace("\n", " ")
    r = json.loads(out.read_text())["TEST"]
    assert r["classes_in_set"] == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    assert r["confusion_matrix"]["columns"] == PBC_CLASSES and len(r["confusion_matrix"]["rows"]) == 4
    assert sum(map(sum, r["confusion_matrix"]["rows_true"])) == r["images"] == 24
    outside = sum(row[k] for row in r["confusion_matrix"]["rows_true"] for k, c in enumerate(PBC_CLASSES) if c not in r["classes_in_set"])
    assert outside == r["predicted_outside_set"]
    # restricting the argmax to the set's classes can only turn "outside" mistakes into right answers
    assert r["accuracy"] <= r["accuracy_in_set_classes"] <= r["accuracy"] + outside / r["images"] + 1e-9
    assert r["scale"]["measured"] + r["scale"]["corrected"] >= 20  # a run of 24: the measured take its median


def test_predict_names_one_of_eight_classes_with_its_scale(two_source_run, tiny_pbc):
    img = sorted((tiny_pbc / "test" / "BASOPHIL").glob("*.jpg"))[0]
    p = run_cli("predict", str(img), "--model", str(two_source_run / "model.safetensors"), "--format", "json")
    r = json.loads(p.stdout)[0]
    assert r["class"] in PBC_CLASSES and set(r["probabilities"]) == set(PBC_CLASSES)
    assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    assert r["scale"] == "measured" and 9 < r["px_per_um"] < 13


def test_adapt_reestimates_statistics_fixes_scale_and_round_trips(two_source_run, tiny_pbc, tmp_path):
    src = two_source_run / "model.safetensors"
    out = tmp_path / "adapted.safetensors"
    folder = tmp_path / "unlabelled"  # a lab's unlabelled cells: no class folders, just images
    folder.mkdir()
    for f in sorted(tiny_pbc.glob("train/*/*.jpg"))[::2]:
        (folder / f.name).write_bytes(f.read_bytes())
    p = run_cli("adapt", str(folder), "--model", str(src), "--out", str(out), "--heldout", str(tiny_pbc / "test"))
    assert "before" in p.stderr and "after" in p.stderr
    before, _ = load_model_file(src)
    after, meta = load_model_file(out)
    bn = "backbone.bn1.running_mean"
    assert not torch.allclose(before.state_dict()[bn], after.state_dict()[bn])
    assert torch.equal(before.state_dict()["head.1.weight"], after.state_dict()["head.1.weight"])  # no labels: the head is untouched
    a = meta["info"]["adapted"]
    assert a["images"] == 40 and a["batchnorm"]["re_estimated_on"] == 40 and len(a["from_sha256"]) == 64
    assert 9.5 < after.spec.px_per_um < 12.5 and a["heldout_after"]["images"] == 32
    # the adapted file loads as a model and exports to ONNX with the same probabilities
    images = sorted(tiny_pbc.glob("test/*/*.jpg"))[:6]
    native = load_model(out)
    assert native.spec.px_per_um == after.spec.px_per_um
    assert all(pr.scale == "given" for pr in native.predict(images))
    onnx_path = tmp_path / "adapted.onnx"
    run_cli("export", "--model", str(out), "--out", str(onnx_path), "--data", str(tiny_pbc), "--check-split", "TEST", "--check-max", "8")
    exported = load_model(onnx_path)
    assert exported.spec.px_per_um == after.spec.px_per_um
    assert np.abs(native.predict_proba(images).numpy() - exported.predict_proba(images).numpy()).max() < 1e-4


def test_adapt_with_labels_changes_the_head(two_source_run, tiny_pbc, tmp_path):
    out = tmp_path / "labelled.safetensors"
    run_cli("adapt", str(tiny_pbc / "train"), "--model", str(two_source_run / "model.safetensors"), "--out", str(out),
            "--labelled", str(tiny_pbc / "train"), "--epochs", "1")
    before, _ = load_model_file(two_source_run / "model.safetensors")
    after, meta = load_model_file(out)
    assert not torch.equal(before.state_dict()["head.1.weight"], after.state_dict()["head.1.weight"])
    assert meta["info"]["adapted"]["labelled"]["per_class"] == {c: 10 for c in PBC_CLASSES}


def test_adapt_keeps_statistics_of_a_model_fine_tuned_with_them_frozen(tiny_pbc, tmp_path):
    # the shipped model was fine-tuned with ImageNet's statistics frozen: re-estimating them breaks such a
    # model (scripts/bn_effect.py), so auto keeps them and only fixes the lab's scale; target is still there
    from wbc.infer.predictor import shipped_model_path

    src = shipped_model_path()
    before, meta = load_model_file(src)
    assert meta["info"]["config"]["bn"] == "frozen"
    kept, target = tmp_path / "kept.safetensors", tmp_path / "target.safetensors"
    p = run_cli("adapt", str(tiny_pbc / "train"), "--out", str(kept))
    assert "statistics kept" in p.stderr
    run_cli("adapt", str(tiny_pbc / "train"), "--out", str(target), "--bn-stats", "target")
    bn = "backbone.bn1.running_mean"
    k, t = load_model_file(kept), load_model_file(target)
    assert torch.equal(before.state_dict()[bn], k[0].state_dict()[bn]) and not torch.allclose(before.state_dict()[bn], t[0].state_dict()[bn])
    assert k[1]["info"]["adapted"]["batchnorm"]["statistics"] == "kept" and 9.5 < k[0].spec.px_per_um < 12.5
    p = run_cli("adapt", str(tiny_pbc / "train"), "--out", str(tmp_path / "x.safetensors"), "--bn-stats", "sometimes", check=False)
    assert p.returncode == 2 and "--bn-stats must be auto, target or keep" in p.stderr and "Traceback" not in p.stderr


def test_adapt_refuses_bad_inputs(two_source_run, tmp_path):
    model = str(two_source_run / "model.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run_cli("adapt", str(empty), "--model", model, "--out", str(tmp_path / "a.safetensors"), check=False)
    assert p.returncode == 2 and "no images in" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("adapt", str(empty), "--model", model, "--out", str(tmp_path / "a.onnx"), check=False)
    assert p.returncode == 2 and "must end in .safetensors" in p.stderr
    p = run_cli("adapt", str(empty), "--labelled", str(tmp_path / "nope"), "--out", str(tmp_path / "a.safetensors"), check=False)
    assert p.returncode == 2 and f"no such folder: {tmp_path / 'nope'} (--labelled)" in p.stderr.replace("\n", "")


def test_sources_parse_and_balance():
    with pytest.raises(WbcError, match="NAME=PATH"):
        parse_sources(["=x"])
    with pytest.raises(WbcError, match="data folder not found"):
        parse_sources(["kaggle=/no/such/folder"])
    rows = [Row(f"k{i}", "A", f"g{i}", "train", "k") for i in range(90)] + [Row(f"k{i}", "B", "g", "train", "k") for i in range(10)]
    rows += [Row(f"p{i}", c, f"p{i}", "train", "p") for i in range(5) for c in "ABCD"]
    w = np.array(balanced_weights(rows))
    src = np.array([r.source for r in rows])
    assert abs(w[src == "k"].sum() - w[src == "p"].sum()) < 1e-9  # each source half
    kb = np.array([r.label == "B" for r in rows]) & (src == "k")
    assert abs(w[kb].sum() - w[(src == "k") & ~kb].sum()) < 1e-9  # within a source, each class equal
    pair = np.array(balanced_weights(rows, "pair"))  # 2 classes of k, 4 of p: each of the 6 pairs a sixth
    for s, c in {(r.source, r.label) for r in rows}:
        m = np.array([(r.source, r.label) == (s, c) for r in rows])
        assert abs(pair[m].sum() - 1 / 6) < 1e-9
    with pytest.raises(WbcError, match="--balance"):
        balanced_weights(rows, "classes")


def test_init_starts_a_new_class_from_a_trained_model(two_source_run, tiny_kaggle, tmp_path):
    from wbc.models.classifier import CellClassifier
    from wbc.models.io import warm_start

    path = two_source_run / "model.safetensors"
    old, _ = load_model_file(path)
    spec = type(old.spec)(backbone=old.spec.backbone, classes=["BLAST", *PBC_CLASSES], input_size=old.spec.input_size,
                          head=old.spec.head, field_um=old.spec.field_um)
    new = CellClassifier(spec, pretrained=False)
    assert warm_start(new, path) == ["BLAST"]
    assert torch.equal(new.backbone.conv_stem.weight, old.backbone.conv_stem.weight)
    last = len(new.head) - 1
    for j, c in enumerate(spec.classes[1:], start=1):  # every known class keeps its output row
        assert torch.equal(new.head[last].weight[j], old.head[last].weight[PBC_CLASSES.index(c)])
    # through the CLI: a four-class run from the eight-class file at a higher input size (the weights do not
    # depend on it), and a clear line when the networks differ
    run = tmp_path / "init"
    p = run_cli("train", "--data", f"kaggle={tiny_kaggle}", "--init", str(path), "--out", str(run), "--size", "80", "--head", "32",
                "--round1-epochs", "1", "--round2-epochs", "1", "--epoch-size", "32", "--workers", "0", "--val-fraction", "0.25")
    assert f"starting from {path}" in p.stderr and (run / "model.safetensors").is_file()
    grown, _ = load_model_file(run / "model.safetensors")
    assert list(grown.spec.input_size) == [80, 80]
    # no round 1: the given model (head included) is the first candidate, scored on validation before round 2
    again = tmp_path / "no_round1"
    p = run_cli("train", "--data", f"kaggle={tiny_kaggle}", "--init", str(run / "model.safetensors"), "--out", str(again), "--size", "80",
                "--head", "32", "--round1-epochs", "0", "--round2-epochs", "1", "--epoch-size", "32", "--workers", "0", "--val-fraction", "0.25",
                "--cast", "0.2", "--sam", "0.05", "--colour", "0.3", "--gamma", "0.6,1.7", "--transfer", "0.5",
                "--layer-decay", "0.8")  # round 2 in sharpness-aware steps, early blocks at lower rates
    assert "starting model: val balanced accuracy" in p.stderr
    rows = list(csv.DictReader(open(again / "metrics.csv")))
    assert [(r["round"], r["epoch"]) for r in rows] == [("1", "0"), ("2", "1")]
    kept = json.loads((again / "summary.json").read_text())
    assert kept["config"]["augment"]["cast"] == 0.2 and kept["config"]["sam"] == 0.05
    assert kept["config"]["augment"]["colour"] == 0.3 and kept["config"]["augment"]["gamma"] == [0.6, 1.7]
    assert kept["config"]["augment"]["transfer"] == 0.5 and kept["config"]["layer_decay"] == 0.8
    best_val = max(float(r["val_balanced_accuracy"]) for r in rows)  # the kept model is the better of the two candidates
    assert kept["metrics"]["val"]["balanced_accuracy"] == pytest.approx(best_val, abs=0.02)
    p = run_cli("train", "--data", f"kaggle={tiny_kaggle}", "--out", str(tmp_path / "nothing"), "--round1-epochs", "0", check=False)
    assert p.returncode == 2 and "--round1-epochs 0 needs --init" in p.stderr and "Traceback" not in p.stderr
    for option, value in (("--label-smoothing", "1.5"), ("--cast", "-0.1"), ("--background", "2"), ("--tight-crop", "-1"), ("--ema", "1"), ("--sam", "-0.05"),
                          ("--layer-decay", "0"), ("--transfer", "1.5"), ("--colour", "1"), ("--gamma", "1.5,0.8"), ("--gamma", "0.8")):
        p = run_cli("train", "--data", f"kaggle={tiny_kaggle}", "--out", str(tmp_path / "nothing"), option, value, check=False)
        assert p.returncode == 2 and f"{option} must be" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("train", "--data", f"kaggle={tiny_kaggle}", "--init", str(path), "--out", str(tmp_path / "bad"), "--size", "64",
                "--head", "16", "--workers", "0", check=False)
    assert p.returncode == 2 and "--init" in p.stderr and "give the same --backbone and --head" in p.stderr
    assert "Traceback" not in p.stderr


def test_adapt_refits_the_open_set_statistics_to_the_moved_backbone(tiny_pbc, tmp_path):
    # fine-tuning moves the features: the stored class means must follow them, or the distance (the
    # UNIDENTIFIED / "unlike the training cells" decision) measures cells against features no longer made
    from wbc.infer.predictor import shipped_model_path
    from wbc.training.adapt import _labelled, _loader
    from wbc.training.openset import _features

    out = tmp_path / "labelled.safetensors"
    run_cli("adapt", str(tiny_pbc / "train"), "--out", str(out), "--labelled", str(tiny_pbc / "train"), "--epochs", "2")
    stale, _ = load_model_file(shipped_model_path())
    after, meta = load_model_file(out)
    o = meta["info"]["adapted"]["openset"]
    assert sorted(o["class_means_refit"]) == sorted(PBC_CLASSES)
    assert after.spec.near_distance == o["after"]["near_distance"] != o["before"]["near_distance"]
    assert after.spec.far_distance > after.spec.near_distance > 0
    # held-out cells of the lab lie nearer their own class with the re-fitted means than with the stale ones
    paths, y = _labelled(str(tiny_pbc / "test"), after.spec.classes, "test")
    feats, _ = _features(after, _loader(paths, y, after.spec.px_per_um, after.spec, None, 64))
    own = torch.arange(len(y)), torch.tensor(y)
    with torch.no_grad():
        refit_d = after.openset(feats)[own].mean()
        after.openset.means.copy_(stale.openset.means)
        stale_d = after.openset(feats)[own].mean()
    assert refit_d < stale_d
