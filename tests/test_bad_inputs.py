"""Every case of the bad-input corpus (tests/corpus.py) through the CLI, the Python API and the HTTP API:
an answer, or one clear line naming the file; never a traceback, never a 5xx, never a hang."""

import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import BCCD, BLOOD, DATA, cli_telling, kaggle_images, run_cli
from corpus import make_corpus
from fastapi.testclient import TestClient

import wbc
from wbc.errors import WbcError
from wbc.infer.answers import UNIDENTIFIED
from wbc.infer.predictor import shipped_model_path
from wbc.serve.app import create_app

IMAGE_CASES = lambda cases: [c for c in cases if not c.name.startswith("model_")]  # noqa: E731
MODEL_CASES = lambda cases: [c for c in cases if c.name.startswith("model_")]  # noqa: E731


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wbc_cache):
    cases = make_corpus(tmp_path_factory.mktemp("bad inputs"), kaggle_images("TEST_SIMPLE", "NEUTROPHIL", 1)[0], shipped_model_path())
    assert len(cases) >= 30
    return cases


@pytest.fixture(scope="module")
def model(wbc_cache):
    return wbc.load_model()


def test_python_api_answers_or_names_the_file(corpus, model):
    for c in IMAGE_CASES(corpus):
        if c.path.is_dir():  # folders go through the collection API
            outcomes = wbc.classify([c.path], model=model)
            if c.expect == "ok":
                assert outcomes and all(o.prediction is not None for o in outcomes), c.name
            else:
                assert all(o.prediction is None for o in outcomes), c.name
            continue
        if c.expect == "ok":
            r = model.predict([c.path])[0]
            assert r.label in [*model.classes, "NO_WHITE_CELL", UNIDENTIFIED], c.name  # an answer, whichever
        else:
            with pytest.raises(WbcError) as e:
                model.predict([c.path])
            assert str(c.path) in str(e.value) and "\n" not in str(e.value), c.name
            outcome = wbc.classify([c.path], model=model)[0]  # the collection API skips it, with the same reason
            assert outcome.prediction is None and str(c.path) in outcome.error, c.name


def test_cli_one_run_over_every_case(corpus, tmp_path):
    cases = [c for c in IMAGE_CASES(corpus) if not c.path.is_dir()]
    out = tmp_path / "results.jsonl"
    p = run_cli("predict", *[str(c.path) for c in cases], "--out", str(out), "--workers", "0", check=False)
    assert p.returncode == 1, p.stderr  # some files failed, the rest were classified
    assert "Traceback" not in p.stderr + p.stdout
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    for c in cases:
        r = rows[str(c.path)]
        if c.expect == "ok":
            assert r["error"] == "" and r["class"], c.name
        else:
            assert r["error"] and r["class"] == "", c.name
            assert str(c.path) in p.stderr.replace("\n", "") or "more" in p.stderr, c.name


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "text_renamed.jpg", "bomb_jpeg.jpg", "broken symlink", "folder named .jpg"])
def test_cli_single_bad_file_is_one_line(corpus, name):
    c = next(c for c in corpus if c.name == name)
    p = run_cli("predict", str(c.path), check=False)
    assert p.returncode in (1, 2) and "Traceback" not in p.stderr
    assert str(c.path) in p.stderr.replace("\n", "")


def test_cli_folder_with_a_symlink_loop_finishes(corpus):
    c = next(c for c in corpus if c.name == "symlink loop folder")
    p = run_cli("predict", str(c.path), "--format", "csv")
    assert p.stdout.count("cell.jpeg") == 1  # found once, the loop not followed


def test_bad_model_files_through_cli_python_and_serve(corpus):
    for c in MODEL_CASES(corpus):
        with pytest.raises(WbcError) as e:
            wbc.load_model(c.path)
        assert str(c.path) in str(e.value)
        p = run_cli("predict", str(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0]), "--model", str(c.path), check=False)
        assert p.returncode == 2 and str(c.path) in p.stderr.replace("\n", "") and "Traceback" not in p.stderr
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = run_cli("serve", "--model", str(c.path), "--port", str(port), check=False)
        assert p.returncode == 2 and str(c.path) in p.stderr.replace("\n", "") and "Traceback" not in p.stderr
    newer = next(c for c in corpus if c.name == "model_newer.safetensors")
    with pytest.raises(WbcError, match="newer wbc"):
        wbc.load_model(newer.path)


def test_http_api_answers_or_names_the_file(corpus, model):
    client = TestClient(create_app(model))
    for c in IMAGE_CASES(corpus):
        if not c.http:
            continue
        r = client.post("/api/v1/classify", files=[("files", (c.path.name, c.path.read_bytes(), "application/octet-stream"))])
        assert r.status_code < 500, (c.name, r.text)
        if c.expect == "ok":
            assert r.status_code == 200, (c.name, r.text)
        else:
            assert r.status_code in (413, 415, 422), (c.name, r.status_code)
            detail = r.json()["detail"]
            assert c.path.name in detail and "\n" not in detail, c.name


def test_the_corpus_covers_what_the_issue_lists(corpus):
    names = " ".join(c.name for c in corpus)
    for kind in ("truncated", "empty", "text_renamed", "zero_width", "one_pixel", "bomb", "sixteen_bit", "cmyk", "palette", "alpha",
                 "greyscale", "animated", "multipage", "exif", "progressive", "webp", "heic", "non-ascii", "loop", "permission",
                 "model_truncated", "model_foreign", "model_newer"):
        assert kind in names, kind
    assert os.path.exists(corpus[0].path)


def test_a_scientific_cameras_deep_files_read_like_their_8_bit_originals(tmp_path, model):
    """A 10-, 12- or 14-bit camera writes 16-bit TIFF/PNG holding 0..1023, 4095 or 16383; read as 16-bit they came out
    nearly black. Read by the depth their values imply, they give the 8-bit original's pixels, scale and answer."""
    import cv2
    import numpy as np
    from conftest import pbc_images
    from PIL import Image

    from wbc.image.decode import decode

    src = pbc_images("test", "NEUTROPHIL", 1)[0]
    rgb = decode(src)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint32)
    deep = lambda a, top: ((a * top + 127) // 255).astype(np.uint16)  # noqa: E731
    files = {"12-bit colour tif": deep(bgr, 4095), "10-bit colour png": deep(bgr, 1023), "16-bit colour tif": deep(bgr, 65535),
             "14-bit colour tif, alpha": cv2.cvtColor(deep(bgr, 16383), cv2.COLOR_BGR2BGRA)}
    paths = []
    for name, a in files.items():
        paths.append(tmp_path / (name.replace(" ", "_").replace(",", "") + (".png" if "png" in name else ".tif")))
        assert cv2.imwrite(str(paths[-1]), a)
    paths.append(tmp_path / "12-bit_grey.png")
    Image.fromarray(deep(rgb[..., 1].astype(np.uint32), 4095)).save(paths[-1])
    paths.append(tmp_path / "float_grey.tif")
    Image.fromarray(rgb[..., 1].astype(np.float32) / 255).save(paths[-1])
    for p in paths:
        back = decode(p)
        want = rgb if "colour" in p.name else np.repeat(rgb[..., 1:2], 3, 2)
        assert back.shape == rgb.shape and np.abs(back.astype(int) - want).max() <= 1, p.name
    first, *deep = model.predict([src, *paths[:4]])
    for d in deep:
        assert (d.label, d.to_dict()["scale"]) == (first.label, first.to_dict()["scale"]), d.source
        assert abs(d.probabilities[first.label] - first.probabilities[first.label]) < 0.01, d.source


WHY_NOT = cli_telling("torch")


def test_wrong_paths_are_said_before_torch_loads(tmp_path):
    """A missing or wrong file or folder is one line from every command that reads one, said before PyTorch is imported
    (seconds: a train --init typo was found only after the data had been scanned and grouped)."""
    pbc, cell = str(DATA / "pbc"), str(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0])
    missing, onnx = str(tmp_path / "missing.safetensors"), str(tmp_path / "missing.onnx")
    cases = [(["evaluate", "--data", str(tmp_path / "nope")], "data folder not found"),
             (["evaluate", "--model", missing, "--data", str(BLOOD)], f"model file not found: {missing}"),
             (["export", "--out", str(tmp_path / "m.txt"), "--data", str(BLOOD)], "must end in .onnx"),
             (["bench", "--model", onnx], "make one with `wbc export`"),
             (["serve", "--model", str(tmp_path)], f"{tmp_path} is a folder: pass the model file inside it"),
             (["predict", cell, "--model", missing], "model file not found"),
             (["predict", str(tmp_path / "cell[red].jpeg")], "cell[red].jpeg: no file matches"),  # not read as a colour
             (["count", cell, "--model", onnx], "model file not found"),
             (["train", "--data", f"pbc={pbc}", "--init", missing, "--out", str(tmp_path / "run")], "--init takes a wbc model file"),
             (["train", "--data", f"pbc={pbc}", "--manifest", f"pbc={tmp_path / 'm.csv'}", "--out", str(tmp_path / "run")], "split manifest not found"),
             (["evaluate-count", "--data", str(tmp_path)], "Pascal VOC"),
             (["evaluate-count", "--data", str(BCCD), "--split", "nope"], "pass --split as one of the lists there (test, train"),
             (["evaluate", "--split", "TEST_SIMPLE", "--split", "nope"], "split 'nope' not found under"),
             (["count", cell, "--detector", str(tmp_path / "d.onnx")], "detector file not found"),
             (["count", cell, "--out", cell], "is a file: pass a folder for the annotated fields"),
             (["export-detector", "--out", str(tmp_path / "d.txt")], "--out must end in .onnx"),
             (["evaluate", "WBC_DATA=/nope"], "WBC_DATA is '/nope', not a folder"),
             (["evaluate-count", "WBC_BCCD=/nope"], "WBC_BCCD is '/nope', not a folder")]
    _said_before_torch(cases, tmp_path)
    assert not (tmp_path / "run").exists()  # no run folder begun


def _said_before_torch(cases: list, cwd) -> None:
    """Each command (WBC_X=... items: its environment) answers one error line naming what the words say, exit status 2,
    with PyTorch never imported. Fresh interpreters (the zygote's children have torch), four at a time."""

    def run(args: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ, **dict(a.split("=", 1) for a in args if a.startswith("WBC_")))
        args = [a for a in args if not a.startswith("WBC_")]
        return subprocess.run([sys.executable, "-c", WHY_NOT, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)

    with ThreadPoolExecutor(4) as pool:
        for (args, words), p in zip(cases, pool.map(run, [args for args, _ in cases])):
            said = p.stderr.replace("\n", "")
            assert p.returncode == 2 and words in said and "Traceback" not in said, (args, p.stderr)
            assert said.endswith("torch not imported") and said.count("error:") == 1, (args, p.stderr)


def test_options_out_of_range_are_said_before_torch_loads(tmp_path):
    """A count, share or port out of its range is one line before anything loads: `serve --port 99999` ended in an
    OverflowError traceback, `train --batch-size 0` and `--epoch-size -5` started training, `data split --val-fraction 2`
    grouped the images and would have held out half of them."""
    cell, pbc = str(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0]), str(DATA / "pbc")
    train = ["train", "--data", f"pbc={pbc}", "--out", str(tmp_path / "run")]
    cases = [(["serve", "--port", "99999"], "--port must be from 1 to 65535, not 99999"),
             (["predict", cell, "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
             (["predict", cell, "--workers", "-1"], "--workers must be at least 0"),
             ([*train, "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
             ([*train, "--epoch-size", "-5"], "--epoch-size must be at least 0"),
             ([*train, "--size", "0"], "--size must be at least 32"),
             ([*train, "--val-fraction", "2"], "--val-fraction must be above 0 and below 1"),
             ([*train, "--device", "gpu"], "--device must be auto, cpu, cuda, cuda:N or mps, not gpu"),
             (["data", "split", "--data", pbc, "--val-fraction", "2", "--out", str(tmp_path / "m.csv")], "--val-fraction must be above 0"),
             (["bench", "--seconds", "0"], "--seconds must be positive"),
             (["export", "--out", str(tmp_path / "m.onnx"), "--check-max", "-1"], "--check-max must be at least 0"),
             (["adapt", str(tmp_path), "--epochs", "-1", "--out", str(tmp_path / "a.safetensors")], "--epochs must be at least 0"),
             (["train-detector", "--crop", "10", "--out", str(tmp_path / "run")], "--crop must be at least 64"),
             (["review", "adapt", "--holdout", "1.5", "--data-dir", str(tmp_path)], "--holdout must be at least 0 and below 1")]
    _said_before_torch(cases, tmp_path)
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.csv").exists()


def test_a_mistyped_command_line_is_one_line_naming_the_command(tmp_path):
    """Typer's own parse errors (a word where a number goes, an unknown option or command, a missing argument) were
    a usage line, a hint and a boxed message; now one line like every other mistake, naming the command and its
    --help. A prompt that reads the end of its input says so in one line too (status 1, as before)."""
    cell = str(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0])
    cases = [(["bench", "--seconds", "abc"], "wbc bench: invalid value for '--seconds'"),
             (["serve", "--port", "http"], "wbc serve: invalid value for '--port'"),
             (["predict", cell, "--batchsize", "8"], "wbc predict: no such option: --batchsize"),
             (["predic", cell], "wbc: no such command 'predic'. Did you mean 'predict'? (see `wbc --help`)"),
             (["predict"], "wbc predict: missing argument 'inputs' (see `wbc predict --help`)"),
             (["review", "case"], "wbc review: no such command 'case'"),
             (["data", "check", "a", "b"], "wbc data check: got unexpected extra argument(s) (b) (see `wbc data check --help`)")]
    _said_before_torch(cases, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "WBC_PASSWORD"}
    p = subprocess.run([sys.executable, "-c", WHY_NOT, "review", "users", "add", "bob", "--data-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and "error: aborted: a prompt read the end of its input" in p.stderr and "$WBC_PASSWORD" in p.stderr
    assert "Traceback" not in p.stderr


def test_help_lists_the_commands_in_the_order_a_newcomer_needs_them():
    """`wbc --help` listed `count`, `train-detector`, `export-detector` and `evaluate-count` before `predict` (the order
    the modules happened to load): now four boxes, using a model first, each command in one, without PyTorch loading."""
    p = subprocess.run([sys.executable, "-c", WHY_NOT, "--help"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, COLUMNS="100"))
    assert p.returncode == 0 and p.stderr.strip() == "torch not imported", p.stderr
    listed = re.findall(r"^│ ([a-z][a-z-]*)\s{2,}", p.stdout, re.M)  # each command's first line in its box
    heads = [p.stdout.index(h) for h in ("Use a model", "Check a model", "Make or fit a model", "Data and the lab's review")]
    assert heads == sorted(heads) and "─ Commands ─" not in p.stdout, p.stdout
    assert listed == ["predict", "count", "serve", "evaluate", "evaluate-count", "bench", "train", "adapt", "export",
                      "train-detector", "export-detector", "data", "review"], p.stdout


def test_file_names_in_brackets_are_shown_as_named(tmp_path):
    """The terminal reads [red] or [bold] as colours: a file "cell[red].jpeg" was listed as "cell.jpeg" in predict's
    table, its skipped line and count's tables, so a lab could not tell which file a row was."""
    folder = tmp_path / "slide[b]"
    folder.mkdir()
    (folder / "cell[red].jpeg").write_bytes(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0].read_bytes())
    (folder / "bad[bold].jpeg").write_text("not an image")
    p = run_cli("predict", "slide[b]", cwd=tmp_path, check=False)  # short paths: a table row is not folded
    assert p.returncode == 1 and "│ slide[b]/cell[red].jpeg │" in p.stderr, p.stderr
    assert "skipped cannot read image slide[b]/bad[bold].jpeg" in p.stderr, p.stderr
    p = run_cli("count", "slide[b]/cell[red].jpeg", "--out", "fields[i]", cwd=tmp_path)
    assert "│ cell[red].jpeg │" in p.stderr and "annotated images in fields[i]" in p.stderr, p.stderr


def test_python_arrays_of_any_depth_read_as_the_file_does(model):
    """An array from scikit-image (floats 0..1), a 16-bit camera or an RGBA image gives the file's answer: floats were
    cast to uint8 (all 0: a black image, "no white cell found" in silence) and 16-bit values wrapped around. A negative
    scale framed every cell at a nonsense size and answered in silence; it is refused."""
    import numpy as np
    from PIL import Image

    cell = kaggle_images("TEST_SIMPLE", "LYMPHOCYTE", 1)[0]
    rgb = np.asarray(Image.open(cell).convert("RGB"))
    ref = model.predict([cell])[0]
    alpha = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    for name, a in (("float 0..1", rgb / 255.0), ("16-bit", rgb.astype(np.uint16) * 257), ("int64", rgb.astype(np.int64)), ("RGBA", alpha)):
        p = model.predict([a])[0]
        assert p.label == ref.label and abs(p.probability - ref.probability) < 1e-3, (name, p.label, p.probability, ref)
    with pytest.raises(WbcError, match="px_per_um must be positive"):
        model.predict([cell], px_per_um=-2)
    with pytest.raises(WbcError, match="px_per_um must be positive"):
        wbc.classify([cell], model=model, px_per_um=-2)


def test_a_results_file_of_another_kind_is_refused(tmp_path):
    """`wbc predict --out results.xlsx` (or .json, or no suffix) wrote csv text under that name: a file a spreadsheet or
    a JSON reader cannot open. Refused in one line before anything loads, and from Python; `--format csv` keeps a name."""
    cell = str(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0])
    cases = [(["predict", cell, "--out", str(tmp_path / name)], f"--out {name}: results are written to a .csv, .jsonl or .parquet file")
             for name in ("r.xlsx", "r.json", "results")]
    _said_before_torch(cases, tmp_path)
    assert not any((tmp_path / name).exists() for name in ("r.xlsx", "r.json", "results"))
    with pytest.raises(WbcError, match="a spreadsheet opens the .csv"):
        wbc.classify([cell], out=tmp_path / "r.xls")
    run_cli("predict", cell, "--out", str(tmp_path / "r.txt"), "--format", "csv")
    assert (tmp_path / "r.txt").read_text().startswith("path,class,probability,")
