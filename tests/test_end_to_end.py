"""A tiny real run through the CLI: split -> train (both rounds) -> resume -> evaluate -> predict."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import CLASSES, run_cli

from wbc.data.split import read_manifest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_kaggle, wbc_cache):
    work = tmp_path_factory.mktemp("run")
    manifest = work / "split_manifest.csv"
    p = run_cli("data", "split", "--data", str(tiny_kaggle), "--out", str(manifest), "--val-fraction", "0.25")
    assert "manifest written" in p.stderr
    run = work / "run"
    p = run_cli("train", "--data", str(tiny_kaggle), "--manifest", str(manifest), "--out", str(run), "--size", "64",
                "--head", "64,32", "--round1-epochs", "4", "--round2-epochs", "1", "--epoch-size", "32", "--workers", "0")
    (work / "train.log").write_text(p.stderr)
    return tiny_kaggle, manifest, run


def test_split_is_group_disjoint(tiny_run):
    data, manifest, _ = tiny_run
    rows = read_manifest(manifest, data)
    train = {r.group for r in rows if r.split == "train"}
    val = {r.group for r in rows if r.split == "val"}
    assert train and val and not train & val
    assert {r.split for r in rows} >= {"train", "val", "test", "test_simple"}
    # TEST_SIMPLE holds the originals TEST was made from: each TEST image joins an original's group
    simple = {r.group for r in rows if r.split == "test_simple"}
    test = [r.group for r in rows if r.split == "test"]
    assert sum(g in simple for g in test) >= 0.9 * len(test)


def test_run_folder_holds_config_log_checkpoint_model(tiny_run):
    _, _, run = tiny_run
    for name in ("config.json", "metrics.csv", "last.pt", "model.safetensors", "manifests/blood-cells.csv", "sources.json", "summary.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["round"] for r in rows].count("2") == 1 and [r["round"] for r in rows].count("1") >= 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trained_on"]["train_groups"] > 0 and 0 <= summary["metrics"]["val"]["accuracy"] <= 1
    # a model that flags nearly all of validation says so plainly (here: a 64-pixel model after a few epochs)
    flagged = summary["metrics"]["val"]["review"]["flagged"]
    log = " ".join((run.parent / "train.log").read_text().split())
    assert ("of validation: no confidence reaches" in log) == (flagged > 0.9), (flagged, log[-300:])


def test_resume_continues_a_run(tiny_run, tmp_path):
    data, manifest, run = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["out"], cfg["round2_epochs"] = str(copy), 2  # one more epoch than the run did
    (copy / "config.json").write_text(json.dumps(cfg))
    p = run_cli("train", "--out", str(copy), "--resume")
    assert "resuming" in p.stderr and "round 2, 1 epochs done" in p.stderr
    rows = list(csv.DictReader(open(copy / "metrics.csv")))
    assert [r["epoch"] for r in rows if r["round"] == "2"] == ["1", "2"]
    # a finished run refuses to be overwritten
    again = run_cli("train", "--data", str(data), "--out", str(copy), check=False)
    assert again.returncode == 2 and "--resume" in again.stderr


def test_evaluate_writes_report_and_metrics(tiny_run, tmp_path):
    data, manifest, run = tiny_run
    out = tmp_path / "eval"
    run_cli("evaluate", "--model", str(run / "model.safetensors"), "--data", str(data), "--split", "TEST", "--split", "TEST_SIMPLE",
            "--out", str(out), "--json", str(out / "all.json"), "--manifest", str(manifest))
    m = json.loads((out / "all.json").read_text())
    test = m["TEST"]
    assert test["images"] == 24 and set(test["per_class"]) == set(CLASSES)
    assert sum(c["support"] for c in test["per_class"].values()) == 24
    assert sum(map(sum, test["confusion_matrix"]["rows_true"])) == 24
    assert 0 <= test["ece"] <= 1
    assert test["per_source_cell"]["n_sources"] >= 4
    lo, hi = test["per_source_cell"]["ci95"]
    assert lo <= test["per_source_cell"]["mean_accuracy_per_source"] <= hi
    for f in ("confusion_matrix.png", "reliability.png", "report.md", "metrics.json"):
        assert (out / "TEST" / f).is_file()
    assert m["TEST_SIMPLE"]["images"] == 71


def test_evaluate_unknown_class_folder(tiny_run, tmp_path):
    data, _, run = tiny_run
    extra = tmp_path / "blood-cells"
    shutil.copytree(data, extra)
    (extra / "dataset2-master/images/TEST/BASOPHIL").mkdir()
    shutil.copy(next((data / "dataset2-master/images/TEST/MONOCYTE").iterdir()), extra / "dataset2-master/images/TEST/BASOPHIL/a.jpeg")
    p = run_cli("evaluate", "--model", str(run / "model.safetensors"), "--data", str(extra), "--out", str(tmp_path / "e"), check=False)
    assert p.returncode == 2 and "BASOPHIL" in p.stderr and "--ignore-unknown" in p.stderr
    p = run_cli("evaluate", "--model", str(run / "model.safetensors"), "--data", str(extra), "--ignore-unknown", "--out", str(tmp_path / "e"))
    assert "24 images" in p.stderr


def test_predict_formats(tiny_run):
    data, _, run = tiny_run
    imgs = sorted((data / "dataset2-master/images/TEST/EOSINOPHIL").iterdir())[:3]
    p = run_cli("predict", *map(str, imgs), "--model", str(run / "model.safetensors"), "--format", "json")
    out = json.loads(p.stdout)
    assert len(out) == 3
    for r in out:
        assert r["class"] in CLASSES and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["probability"] == max(r["probabilities"].values()) and isinstance(r["review"], bool)
    p = run_cli("predict", *map(str, imgs), "--model", str(run / "model.safetensors"), "--format", "csv")
    assert p.stdout.splitlines()[0].startswith("path,class,probability") and len(p.stdout.splitlines()) == 4
    bad = run_cli("predict", str(data / "nope.jpeg"), "--model", str(run / "model.safetensors"), check=False)
    assert bad.returncode == 2 and "nope.jpeg" in bad.stderr and "Traceback" not in bad.stderr
    # an 80-column terminal (a fresh interpreter: the console reads its width once): class, runner-up, reason, and where the
    # rest is; before, a column a class folded each path over four lines
    env = {**os.environ, "COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}
    narrow = subprocess.run([sys.executable, "-m", "wbc.cli", "predict", *map(str, imgs), "--model", str(run / "model.safetensors")],
                            capture_output=True, text=True, env=env, timeout=300)
    said = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", narrow.stderr)  # a terminal's bold and cursor codes
    head = next(line for line in said.splitlines() if "image" in line and "class" in line)
    assert "next" in head and "EOSIN" not in head and len(head) <= 80, said
    assert "every class's probability: --format csv or json" in said
    wide = run_cli("predict", *map(str, imgs), "--model", str(run / "model.safetensors")).stderr  # 200 columns
    assert "EOSIN" in next(line for line in wide.splitlines() if "image" in line and "class" in line)


def test_training_killed_mid_epoch_resumes_to_the_same_model(tiny_run, tmp_path, caplog):
    """SIGKILL during a round-2 epoch; `--resume` redoes at most that epoch and ends where an unbroken run ends, the
    moving average of the weights (`--ema`) included."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    from wbc.models.io import load_model_file

    data, manifest, _ = tiny_run
    # round-2 epochs of 20 steps: about 5 s even on an idle machine, so the kill 0.3 s after epoch 1 lands inside epoch 2
    args = ["train", "--data", str(data), "--manifest", str(manifest), "--size", "64", "--head", "32", "--round1-epochs", "3",
            "--round2-epochs", "3", "--epoch-size", "320", "--batch-size", "16", "--workers", "0", "--patience", "5", "--ema", "0.9"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_cli(*args, "--out", str(whole))
    proc = subprocess.Popen([sys.executable, "-m", "wbc.cli", *args, "--out", str(broken)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = broken / "metrics.csv"
    deadline = time.time() + 600
    while time.time() < deadline and not (metrics.exists() and any(r["round"] == "2" for r in csv.DictReader(open(metrics)))):
        time.sleep(0.05)
    time.sleep(0.3)  # into round-2 epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [r["epoch"] for r in csv.DictReader(open(metrics)) if r["round"] == "2"]
    assert done and done[-1] in ("1", "2"), done  # killed before the end of the run
    # the worst moment for a kill: an epoch's row written, its checkpoint not yet, and a row torn mid-write
    stage = torch.load(broken / "last.pt", map_location="cpu", weights_only=True)["stage"]
    with open(metrics, "a") as f:
        f.write(f"2,{stage['epoch'] + 1},0.5,0.5,0.5,0.5,0.5,0.0001,1.0\n2,{stage['epoch'] + 2},0.4")
    from wbc.infer.predictor import load_model

    with caplog.at_level("WARNING", logger="wbc.infer.predictor"):
        load_model(broken / "model.safetensors")  # the run's best weights so far: usable, said to be unfinished
    assert "not the finished model" in caplog.text
    p = run_cli("train", "--out", str(broken), "--resume")
    assert "resuming" in p.stderr
    caplog.clear()
    with caplog.at_level("WARNING", logger="wbc.infer.predictor"):
        load_model(broken / "model.safetensors")
    assert "not the finished model" not in caplog.text
    assert [r["epoch"] for r in csv.DictReader(open(metrics)) if r["round"] == "2"] == ["1", "2", "3"]
    a, _ = load_model_file(whole / "model.safetensors")
    b, meta = load_model_file(broken / "model.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-3), k  # fp16 file: equal up to storage rounding
    assert meta["info"]["best"] == json.loads((whole / "summary.json").read_text())["best"]
    last_whole, last_broken = (torch.load(r / "last.pt", map_location="cpu", weights_only=True) for r in (whole, broken))
    for k, va in last_whole["ema"].items():
        assert torch.allclose(va.float(), last_broken["ema"][k].float(), atol=1e-4), k  # the average carried over the kill
    moved = [k for k, va in last_whole["ema"].items() if va.is_floating_point() and not torch.allclose(va, last_whole["model"][k])]
    assert len(moved) > 10  # an average, not a copy of the weights
