"""`wbc data check`: counts, and every bad file reported with its reason, never a crash."""

import shutil
import xml.etree.ElementTree as ET

import pytest
from conftest import BCCD, CLASSES, kaggle_images, run_cli
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
    cell = Image.open(kaggle_images("TRAIN", "EOSINOPHIL", 7)[6]).convert("RGB")  # two cells in one file: not one image
    cell.save(d / "stack.tif", save_all=True, append_images=[Image.open(kaggle_images("TRAIN", "EOSINOPHIL", 8)[7]).convert("RGB")])
    return tmp_path


def test_scan_reports_each_bad_file_with_reason(planted):
    s = scan(planted)
    reasons = {b.path.name: b.reason for b in s.bad}
    assert reasons["empty.jpeg"].startswith("empty")
    assert reasons["truncated.jpeg"].startswith("truncated")
    assert reasons["notes.txt"].startswith("not an image file")
    assert reasons["fake.jpeg"].startswith("not an image")
    assert "too small" in reasons["tiny.png"]
    assert reasons["stack.tif"].startswith("2 images of one size in one file")
    assert [b.path.name for b in s.odd_size] == ["big.png"]
    assert s.counts() == {"ALL": {"EOSINOPHIL": 6, "LYMPHOCYTE": 5}}


def test_check_cli_lists_bad_files_and_counts(planted):
    p = run_cli("data", "check", str(planted), check=False)
    assert p.returncode == 1, "a check that finds bad files fails, so a script can stop on it"
    out = p.stdout + p.stderr
    for name in ("empty.jpeg", "truncated.jpeg", "notes.txt", "fake.jpeg", "tiny.png", "stack.tif", "big.png"):
        assert name in out
    assert "11 good images, 6 bad, 1 odd-sized" in out and "check failed: 6 bad file(s)" in out
    for name in ("empty.jpeg", "truncated.jpeg", "notes.txt", "fake.jpeg", "tiny.png", "stack.tif"):  # an odd size alone passes
        (planted / "EOSINOPHIL" / name).unlink()
    p = run_cli("data", "check", str(planted))
    assert "1 odd-sized" in p.stdout + p.stderr and "check failed" not in p.stdout + p.stderr


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


def test_check_a_voc_set_of_smear_fields():
    """`wbc data check` on BCCD read it as a class folder "JPEGIMAGES" and its 364 annotations as bad images. Now:
    fields and boxes per split list, every box without area (found here by ElementTree, apart), no list overlap."""
    p = run_cli("data", "check", str(BCCD))
    lists = {f.stem: f.read_text().split() for f in (BCCD / "ImageSets" / "Main").glob("*.txt")}
    assert f"│ test     │     {len(lists['test'])} │" in p.stderr and "│ all      │    364 │" in p.stderr, p.stderr
    flat = []
    for xml in sorted((BCCD / "Annotations").glob("*.xml")):
        for o in ET.parse(xml).getroot().iter("object"):
            b = [float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            if b[2] <= b[0] or b[3] <= b[1]:
                flat.append(xml.name)
    assert flat and all(f"{name}: RBC box" in p.stderr or f"{name}: WBC box" in p.stderr or f"{name}: Platelets box" in p.stderr for name in flat)
    assert f"364 readable fields, 0 bad files, {len(flat)} boxes to look at, no overlapping split lists" in p.stderr


def test_check_a_damaged_voc_set(tmp_path):
    """Each fault of a VOC copy named: a truncated field, a field without annotation, an annotation without field, a
    box beyond its image, a test field also listed for training. Other commands say what the folder is, in one line."""
    root = tmp_path / "voc"
    ids = (BCCD / "ImageSets" / "Main" / "train.txt").read_text().split()[:4]
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(BCCD / "Annotations" / f"{i}.xml", root / "Annotations")
    jpg = root / "JPEGImages" / f"{ids[0]}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:4000])  # truncated
    (root / "Annotations" / f"{ids[1]}.xml").unlink()
    shutil.copy(BCCD / "Annotations" / "BloodImage_00001.xml", root / "Annotations" / "stray.xml")
    note = root / "Annotations" / f"{ids[2]}.xml"
    note.write_text(note.read_text().replace("<xmax>", "<xmax>9", 1))  # the first box now ends 900+ px right
    broken = root / "Annotations" / f"{ids[3]}.xml"
    broken.write_text(broken.read_text().replace("<ymin>", "<ymin>about ", 1))  # a coordinate that is not a number
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids[:3]))
    (root / "ImageSets/Main/test.txt").write_text("\n".join(ids[2:]))
    p = run_cli("data", "check", str(root), check=False)
    said = p.stderr.replace("\n", " ")
    assert p.returncode == 1 and "check failed: 7 problem(s)" in said, said  # 6 bad files or lists, 1 overlap
    assert f"{ids[0]}.jpg: truncated image" in said and f"{ids[1]}.jpg: no annotation" in said, said
    assert "stray.xml: no image for this annotation" in said and "beyond the 640x480 image" in said
    assert "train.txt: 2 listed field(s) without a readable image and annotation" in said
    assert f"{ids[3]}.xml: an object without a complete <bndbox>" in said and "test.txt: 1 listed field(s)" in said
    assert f"split lists overlap: test and train share 1 field(s), e.g. {ids[2]}" in said
    p = run_cli("evaluate", "--data", str(root), check=False)
    assert p.returncode == 2 and "is a Pascal VOC set of smear fields" in p.stderr and "wbc evaluate-count" in p.stderr
