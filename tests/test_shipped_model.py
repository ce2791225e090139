"""The model shipped in the package: loads, predicts real cells, and its CLI and Python API agree."""

import hashlib
import json

import numpy as np
import pytest
from conftest import (
    CLASSES,
    DATA,
    KAGGLE,
    PBC_CLASSES,
    kaggle_images,
    pbc_images,
    run_cli,
)
from PIL import Image

import wbc
from wbc.infer.predictor import shipped_model_path

pytestmark = pytest.mark.skipif(not shipped_model_path().is_file(), reason="no shipped model in this checkout")


@pytest.fixture(scope="module")
def model():
    return wbc.load_model()


def test_metadata_is_complete(model):
    spec, info = model.spec, model.meta["info"]
    assert spec.classes == sorted([*PBC_CLASSES, "BLAST"]) and spec.backbone == "tf_efficientnet_lite0" and spec.field_um == 24.0
    assert 0.5 <= spec.review_threshold <= 0.995 and spec.temperature > 0 and spec.px_per_um == 0  # scale measured per image
    assert set(info["sources"]) == {"kaggle", "pbc", "munich"} and all(len(s["manifest_sha256"]) == 64 for s in info["sources"].values())
    assert {"val", "kaggle_test", "kaggle_test_simple", "pbc_test", "munich_test"} <= set(info["metrics"])
    assert info["metrics"]["val"]["review"]["accuracy_unflagged"] >= 0.98  # the operating point the threshold was fitted to
    assert model.meta["wbc_version"] == wbc.__version__
    assert shipped_model_path().stat().st_size < 15e6  # fp16: backbone 3.4M + reference head 1.9M parameters + open-set whitening 1280x1280


def test_classifies_the_test_simple_originals(model):
    """The 71 un-augmented Kaggle TEST originals: most are right (official TEST cells were never trained on)."""
    paths = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c)]
    truth = [p.parent.name for p in paths]
    preds = model.predict(paths)
    acc = np.mean([p.label == t for p, t in zip(preds, truth)])
    assert acc >= 0.6, acc  # measured 0.648 (MODEL_CARD.md)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in preds)


def test_classifies_pbc_cells_of_all_eight_classes(model):
    paths = [p for c in PBC_CLASSES for p in pbc_images("test", c)[::10]]
    preds = model.predict(paths)
    acc = np.mean([p.label == q.parent.name for p, q in zip(preds, paths)])
    assert acc >= 0.9, acc  # measured 0.942 on all 799 test images
    assert set(PBC_CLASSES) <= {p.label for p in preds}  # every class is predicted somewhere
    assert sum(p.label == "BLAST" for p in preds) <= 2  # 5 of the 799 (MODEL_CARD.md)


def test_knows_blasts(model):
    """Munich AML test cells (never trained on): most blasts are called BLAST, and a blast that is not is
    flagged for review or UNIDENTIFIED, never a plain normal type -- at most one in the sample."""
    blasts = sorted((DATA / "munich-aml" / "test" / "BLAST").glob("*.jpg"))[::4]
    preds = model.predict(blasts)
    assert np.mean([p.label == "BLAST" for p in preds]) >= 0.7  # measured 0.79 on all 100
    assert all("blasts in this run" in p.review_reason for p in preds)  # 25 cells, most answered BLAST: the run is judged
    own = [[r for r in p.review_reason.split("; ") if not r.startswith("blasts in this run")] for p in preds]
    silent = [p for p, reasons in zip(preds, own) if p.label not in ("BLAST", "UNIDENTIFIED") and not reasons]  # each cell's own flag
    assert len(silent) <= 1, [(p.label, p.probability) for p in silent]
    neutrophils = model.predict(sorted((DATA / "munich-aml" / "test" / "NEUTROPHIL").glob("*.jpg"))[::4])
    assert sum(p.label == "BLAST" for p in neutrophils) <= 1


def test_python_inputs_agree(model):
    path = kaggle_images("TEST_SIMPLE", "LYMPHOCYTE", 1)[0]
    a = model.predict(path)[0]
    b = model.predict(Image.open(path))[0]
    c = model.predict(np.asarray(Image.open(path).convert("RGB")))[0]
    assert a.label == b.label == c.label
    assert abs(a.probability - b.probability) < 0.02 and abs(b.probability - c.probability) < 1e-6


def test_cli_default_model_json(model):
    paths = [str(kaggle_images("TEST_SIMPLE", c, 1)[0]) for c in CLASSES]
    out = json.loads(run_cli("predict", *paths, "--format", "json").stdout)
    assert [r["class"] for r in out] == [p.label for p in model.predict(paths)]


def test_demo_evaluation_on_test_simple(tmp_path):
    p = run_cli("evaluate", "--data", str(KAGGLE.parents[1]), "--split", "TEST_SIMPLE", "--out", str(tmp_path), "--json", str(tmp_path / "m.json"))
    m = json.loads((tmp_path / "m.json").read_text())["TEST_SIMPLE"]
    assert m["images"] == 71 and m["accuracy"] >= 0.6
    assert m["per_source_cell"] is not None  # the shipped manifest knows the TEST_SIMPLE groups
    digest = hashlib.sha256(shipped_model_path().read_bytes()).hexdigest()  # which model gave these figures
    assert m["model_sha256"] == digest and f"(sha256 `{digest[:16]}`)" in (tmp_path / "TEST_SIMPLE" / "report.md").read_text()
    assert (tmp_path / "TEST_SIMPLE" / "misclassified.png").is_file() or m["accuracy"] == 1.0
    assert "TEST_SIMPLE" in p.stderr
    rv = m["review"]  # each reason said with the answers it flagged, in the terminal and the report
    assert rv["reasons"] and sum(rv["reasons"].values()) >= rv["flagged"]
    said = " ".join(p.stderr.split())
    report = (tmp_path / "TEST_SIMPLE" / "report.md").read_text()
    assert all(f"{k} {n:,}" in said and f"{k} {n:,}" in report for k, n in rv["reasons"].items()), said


def test_version_names_the_shipped_files_by_their_digest():
    """`wbc --version`: what a lab's validation records, in half a second (no PyTorch)."""
    import subprocess
    import sys

    from wbc.count.detector import shipped_detector_path

    code = "import sys; from wbc.cli import main; sys.argv = ['wbc', '--version']\ntry: main()\nfinally: print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0] == f"wbc {wbc.__version__}" and lines[-1] == "False", p.stdout + p.stderr
    for path in (shipped_model_path(), shipped_detector_path()):
        assert f"{path.name} sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in p.stdout
    assert "torch " in p.stdout and "onnxruntime " in p.stdout
