"""`wbc data check`: counts, and every bad file reported with its reason, never a crash."""

import shutil

import pytest
from conftest import CLASSES, kaggle_images, run_cli
from PIL import Image

from wbc.data.labels import class_of, named_twice
from wbc.data.scan import find_layout, scan
from wbc.errors import WbcError


@pytest.fixture()
def planted(tmp_path):
    """A <class>/<image> tree of real images plus one of each kind of bad file."""
    for cls in CLASSES[:2]:
        (tmp_path / cls).mkdir()
        for f in kaggle_images("TRAIN", cls, 5):
            shutil.copy(f, tmp_path / cls / f.name)
    good = kaggle_images("TRAIN", "EOSINOPHIL", 6)[5].read_bytes()
    d = tmp_path / "EOSINOPHIL"
    (d / "empty.jpeg").write_bytes(b"")
    (d / "truncated.jpeg").write_bytes(good[: len(good) // 2])
    (d / "notes.txt").write_text("not an image")
    (d / "fake.jpeg").write_text("plain text with an image name")
    Image.new("RGB", (640, 480), "white").save(d / "big.png")  # odd size: used, but listed
    Image.new("RGB", (8, 8), "white").save(d / "tiny.png")
    return tmp_path


def test_scan_reports_each_bad_file_with_reason(planted):
    s = scan(planted)
    reasons = {b.path.name: b.reason for b in s.bad}
    assert reasons["empty.jpeg"].startswith("empty")
    assert reasons["truncated.jpeg"].startswith("truncated")
    assert reasons["notes.txt"].startswith("not an image file")
    assert reasons["fake.jpeg"].startswith("not an image")
    assert "too small" in reasons["tiny.png"]
    assert [b.path.name for b in s.odd_size] == ["big.png"]
    assert s.counts() == {"ALL": {"EOSINOPHIL": 6, "LYMPHOCYTE": 5}}


def test_check_cli_lists_bad_files_and_counts(planted):
    p = run_cli("data", "check", str(planted))
    out = p.stdout + p.stderr
    for name in ("empty.jpeg", "truncated.jpeg", "notes.txt", "fake.jpeg", "tiny.png", "big.png"):
        assert name in out
    assert "11 good images, 5 bad, 1 odd-sized" in out


def test_kaggle_layout_counts(tiny_kaggle):
    base, splits = find_layout(tiny_kaggle)
    assert set(splits) == {"TRAIN", "TEST", "TEST_SIMPLE"}
    s = scan(tiny_kaggle)
    assert s.counts()["TRAIN"] == {c: 24 for c in CLASSES}
    assert sum(s.counts()["TEST_SIMPLE"].values()) == 71
    assert not s.bad


@pytest.mark.parametrize("make", ["missing", "file", "flat"])
def test_wrong_path_or_layout_is_one_clear_line(tmp_path, make):
    target = tmp_path / "x"
    if make == "file":
        target.write_text("hi")
    elif make == "flat":
        target.mkdir()
        shutil.copy(kaggle_images("TRAIN", "MONOCYTE", 1)[0], target / "a.jpeg")  # images, no class folders
    with pytest.raises(WbcError):
        find_layout(target)
    p = run_cli("data", "check", str(target), check=False)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("error:") and str(target) in p.stderr


def test_class_folders_named_as_other_sets_and_labs_name_them():
    """A lab's "neutrophils", LISC's "eos", PBC's "SNE" and the Munich download's "MYO" are the model's classes; an
    abnormal or variant cell's folder is not (it must stay a class the model lacks, to be counted as such)."""
    nine = ["BASOPHIL", "BLAST", "EOSINOPHIL", "ERYTHROBLAST", "IG", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL", "PLATELET"]
    read = {"neutrophils": "NEUTROPHIL", "Lymphocyte": "LYMPHOCYTE", "eos": "EOSINOPHIL", "IGs": "IG", "MYO": "BLAST",
            "NGS": "NEUTROPHIL", "band_neutrophils": "NEUTROPHIL", "nrbc": "ERYTHROBLAST", "Platelets": "PLATELET",
            "BAS": "BASOPHIL", "Myeloblasts": "BLAST", "metamyelocyte": "IG"}
    assert {f: class_of(f, nine) for f in read} == read
    for abnormal in ("LYA", "KSC", "PMB", "atypical lymphocyte", "variant_lymphocytes", "PROMONOCYTE", "smudge", "plasma cell"):
        assert class_of(abnormal, nine) is None, abnormal
    assert class_of("MYO", CLASSES) is None and class_of("eosinophils", CLASSES) == "EOSINOPHIL"  # only the model's own classes
    # training sources that name one type two ways would train it as two classes: `wbc train` warns of each pair
    assert named_twice(["EOSINOPHIL", "NEUTROPHIL", "NEUTROPHILS", "BLAST", "MYO", "SMUDGE", "SMUDGES", "LYA"]) == \
        [["NEUTROPHIL", "NEUTROPHILS"], ["BLAST", "MYO"], ["SMUDGE", "SMUDGES"]]
    assert named_twice(nine) == []
