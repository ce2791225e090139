"""Collections: folders and globs, streamed rows, a run killed with SIGKILL resumed without loss,
parallel decoding, and the same job on a local Ray cluster giving the same answers."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import CLASSES, KAGGLE, run_cli

import wbc
from wbc.infer.batch import classify_stream


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """240 real TEST images in nested folders, plus two bad files."""
    root = tmp_path_factory.mktemp("collection")
    for k, cls in enumerate(CLASSES):
        d = root / f"slide{k % 2}" / cls.lower()
        d.mkdir(parents=True)
        for f in sorted((KAGGLE / "TEST" / cls).glob("*.jpeg"))[::10][:60]:
            shutil.copy(f, d / f.name)
    (root / "slide0" / "notes.jpg").write_text("not an image")
    (root / "slide1" / "cut.jpeg").write_bytes(next((KAGGLE / "TEST" / "MONOCYTE").glob("*.jpeg")).read_bytes()[:3000])
    return root


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folder_and_glob_inputs_stream_rows_and_report_bad_files(folder, tmp_path, wbc_cache):
    out = tmp_path / "all.csv"
    p = run_cli("predict", str(folder / "slide0"), str(folder / "slide1" / "**" / "*.jpeg"), "--out", str(out), check=False)
    assert p.returncode == 1, p.stderr  # two bad files: reported, the rest classified
    rows = _rows(out)
    assert len(rows) == 242 and len({r["path"] for r in rows}) == 242
    bad = [r for r in rows if r["error"]]
    assert sorted(os.path.basename(r["path"]) for r in bad) == ["cut.jpeg", "notes.jpg"]
    assert "240 classified, 2 failed" in p.stderr.replace("\n", " ")
    good = [r for r in rows if not r["error"]]
    classes = wbc.load_model().classes
    assert all(r["class"] in classes or r["class"] == "NO_WHITE_CELL" for r in good)


def test_kill_minus_nine_then_resume_loses_nothing(folder, tmp_path, wbc_cache):
    out = tmp_path / "run.jsonl"
    cmd = [sys.executable, "-m", "wbc.cli", "predict", str(folder), "--out", str(out), "--batch-size", "8", "--workers", "0", "--engine", "pytorch"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 40):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes()
    with open(out, "ab") as f:  # a kill in the middle of a line leaves this behind
        f.write(b'{"path": "torn')
    first = partial.count(b"\n")
    assert 40 <= first < 242
    p = run_cli("predict", str(folder), "--out", str(out), "--resume", "--batch-size", "8", "--engine", "pytorch", check=False)
    assert p.returncode == 1 and f"{first} already in" in p.stderr.replace("\n", " ")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 242 and len({r["path"] for r in rows}) == 242  # every file exactly once, no torn line
    assert out.read_bytes().startswith(partial)  # what was written before the kill is kept as it was
    again = run_cli("predict", str(folder), "--out", str(out), check=False)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwritten by accident


def test_a_csv_an_older_wbc_wrote_resumes_under_todays_columns(folder, tmp_path, wbc_cache):
    """A run begun before an upgrade: its csv lacks the columns added since (review_reason, distance, colour_distance, note).
    --resume keeps its rows, gives them today's header and classifies the rest; a csv of other classes is refused."""
    out = tmp_path / "old.csv"
    run_cli("predict", str(folder / "slide1"), "--out", str(out), check=False)
    today = _rows(out)
    old_cols = [c for c in today[0] if c not in ("review_reason", "distance", "colour_distance", "note")]
    kept = today[:30]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, old_cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(kept)
        f.write(kept[30 - 1]["path"][:12])  # a torn last line
    p = run_cli("predict", str(folder / "slide1"), "--out", str(out), "--resume", check=False)
    failed_before = any(k["error"] for k in kept)  # cut.jpeg's row, when it was among the first 30
    assert p.returncode == (0 if failed_before else 1) and "Traceback" not in p.stderr, p.stderr
    assert "older wbc" in p.stderr and "91 classified" in p.stderr and "30 already in" in p.stderr.replace("\n", " ")
    rows = _rows(out)
    assert list(rows[0]) == list(today[0])  # today's header
    assert len(rows) == 121 and len({r["path"] for r in rows}) == 121
    for r, k in zip(rows[:30], kept):  # the older rows as they were written, the new columns blank
        assert [r[c] for c in old_cols] == [k[c] for c in old_cols] and r["distance"] == r["colour_distance"] == r["note"] == ""
    assert all(r["distance"] for r in rows[30:] if not r["error"] and r["class"] != "NO_WHITE_CELL")
    other = tmp_path / "other.csv"
    other.write_text("path,class,probability,p_A,p_B,review\nx.png,A,0.9,0.9,0.1,0\n")
    again = run_cli("predict", str(folder / "slide1"), "--out", str(other), "--resume", check=False)
    assert again.returncode == 2 and "other classes" in again.stderr and other.read_text().startswith("path,class,probability,p_A")


def test_parallel_decoding_gives_the_same_answers(folder, wbc_cache):
    model = wbc.load_model()
    files = sorted(str(p) for p in folder.rglob("*.jpeg"))[:96]
    one = [o for batch in classify_stream(model, files, 32, workers=0) for o in batch]
    two = [o for batch in classify_stream(model, files, 32, workers=2) for o in batch]
    assert [o.path for o in one] == [o.path for o in two] == files
    for a, b in zip(one, two):
        assert (a.error is None) == (b.error is None)
        if a.prediction:
            assert a.prediction.label == b.prediction.label and abs(a.prediction.probability - b.prediction.probability) < 1e-6


def test_ray_engine_matches_the_local_engine(folder, tmp_path, wbc_cache):
    pytest.importorskip("ray")
    local, ray_out = tmp_path / "local.csv", tmp_path / "ray.csv"
    run_cli("predict", str(folder), "--out", str(local), "--engine", "onnx", check=False)
    p = run_cli("predict", str(folder), "--out", str(ray_out), "--engine", "ray", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    a, b = _rows(local), _rows(ray_out)
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(a) == 242
    for x, y in zip(a, b):
        assert x["class"] == y["class"] and x["error"] == y["error"]
        if not x["error"]:
            cols = [k for k in x if k.startswith("p_")]
            pa = np.array([float(x[k]) for k in cols])
            pb = np.array([float(y[k]) for k in cols])
            assert np.abs(pa - pb).max() <= 1e-5


def test_parquet_for_very_large_runs(folder, tmp_path, wbc_cache):
    import pyarrow.parquet as pq

    out = tmp_path / "cells.parquet"
    p = run_cli("predict", str(folder / "slide1"), "--out", str(out), check=False)
    assert p.returncode == 1  # cut.jpeg
    t = pq.read_table(out).to_pylist()
    assert len(t) == 121 and [r["path"] for r in t if r["error"]] == [str(folder / "slide1" / "cut.jpeg")]
    assert all(abs(sum(v for k, v in r.items() if k.startswith("p_")) - 1) < 1e-3 for r in t if not r["error"])
    again = run_cli("predict", str(folder / "slide1"), "--out", str(out), "--resume", check=False)
    assert again.returncode == 2 and "csv or jsonl" in again.stderr


def test_scale_auto_measures_once_for_the_whole_collection(folder, wbc_cache):
    p = run_cli("predict", str(folder / "slide0"), "--px-per-um", "auto", "--format", "csv", check=False)
    rows = [r for r in csv.DictReader(p.stdout.splitlines()) if not r["error"]]
    assert rows and {r["scale"] for r in rows} == {"given"} and len({r["px_per_um"] for r in rows}) == 1
    assert 5.5 < float(rows[0]["px_per_um"]) < 8.5 and "scale" in p.stderr  # Kaggle crops: about 6.8 px/um


def test_a_run_that_measures_each_scale_frames_on_a_core_of_its_own(folder, wbc_cache):
    """In-process runs frame on a thread ahead of the network; when framing measures every image's red cells the
    ONNX session keeps to the other cores. Same answers, in input order, and no thread left when a run stops early."""
    import threading

    import torch

    from wbc.image.framing import run_scale
    from wbc.infer.batch import run_collection
    from wbc.infer.predictor import fastest

    model = fastest(wbc.load_model())
    shared, given = model.beside_framing(True), model.beside_framing(False)
    cores = os.cpu_count() or 1
    assert shared.engine.threads == max(1, cores - 1) and model.engine.threads == given.engine.threads == cores
    assert model.engine.spinning and not given.engine.spinning and given is not model  # idle threads sleep beside framing
    assert (shared is model) == (cores == 1) and model.beside_framing(True) is shared  # one session, made once
    files = sorted(str(p) for p in folder.rglob("*.jpeg"))[:64]
    x = np.stack([model.input_tensor(f).numpy() for f in files[:8]])
    for other in (shared, given):
        assert torch.allclose(model.probabilities(torch.from_numpy(x)), other.probabilities(torch.from_numpy(x)), atol=1e-5)
    got = []
    run_collection(model, files, got.extend, batch_size=16)
    alone = [o for batch in classify_stream(model, files, 16, 2, run_scale(files)) for o in batch]  # decoder processes
    assert [o.path for o in got] == [o.path for o in alone] == files
    assert [o.prediction.label if o.prediction else o.error for o in got] == [o.prediction.label if o.prediction else o.error for o in alone]
    got = []
    run_collection(model, files, got.extend, batch_size=16, px_per_um=6.81)  # scale given: the non-spinning session
    alone = [o for batch in classify_stream(model, files, 16, 0, 6.81) for o in batch]
    def probs(outcomes):
        return [v for o in outcomes for v in o.prediction.probabilities.values()]

    assert probs(got) == pytest.approx(probs(alone), abs=1e-5)
    stream = classify_stream(model, files, 16)
    next(stream)
    stream.close()  # a consumer that stops after one batch
    assert not [t for t in threading.enumerate() if t.name.startswith("wbc-framing")]


def test_a_long_run_printed_at_its_end_points_to_out(folder, wbc_cache):
    """240 images to the terminal printed nothing until all were done, and an interrupted run kept none: the run now
    says so first and points to --out and --resume; the JSON on stdout stays whole."""
    p = run_cli("predict", str(folder), "--px-per-um", "7", "--format", "json", check=False)
    assert "note: 242 images, and the json prints when all are done: `--out results.csv`" in " ".join(p.stderr.split())
    assert len(json.loads(p.stdout)) == 242
    few = run_cli("predict", str(folder / "slide0" / "eosinophil"), "--px-per-um", "7", "--format", "json")
    assert "prints when all are done" not in few.stderr
