"""Shared fixtures: real images from ../shared/data, copied into small temporary datasets."""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WBC_TEST_DATA", ROOT.parent / "shared" / "data"))
BLOOD = DATA / "blood-cells"
KAGGLE = BLOOD / "dataset2-master" / "images"
PBC = DATA / "pbc"
BCCD = DATA / "bccd"
CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
PBC_CLASSES = ["BASOPHIL", "EOSINOPHIL", "ERYTHROBLAST", "IG", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL", "PLATELET"]

if not KAGGLE.is_dir():
    pytest.exit(f"test data not found at {KAGGLE}: set WBC_TEST_DATA to the folder holding blood-cells/", returncode=2)


def kaggle_images(split: str, cls: str, n: int | None = None) -> list[Path]:
    files = sorted((KAGGLE / split / cls).glob("*.jpeg"))
    return files[:n] if n else files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log: Path, cache: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """A real `wbc serve` process on a free loopback port, once /readyz answers: (process, base URL)."""
    import httpx

    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wbc.cli", "serve", "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "WBC_CACHE": str(cache)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"wbc serve exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"wbc serve did not become ready:\n{log.read_text()}")


def pbc_images(split: str, cls: str, n: int | None = None) -> list[Path]:
    files = sorted(f for f in (PBC / split / cls).glob("*.jpg") if not f.name.startswith("."))  # the set has a .DS_Store named .jpg
    return files[:n] if n else files


ZYGOTE_COLUMNS = "200"  # the width run_cli gives every command; wbc's console reads it once, on import


class Zygote:
    """One process that has imported torch, timm and wbc; each `wbc` command runs in a child forked from it
    (tests/zygote.py: a fresh interpreter spends ~4.5 s on those imports, the suite runs over a hundred commands)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py"))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                     env={**os.environ, "COLUMNS": ZYGOTE_COLUMNS})
        self.ok = self._line(120) == "ready"
        atexit.register(self.close)

    def _line(self, timeout: float) -> str | None:
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            return None
        return self.proc.stdout.readline().strip() or None

    def run(self, args, cwd, env, timeout: float) -> subprocess.CompletedProcess | None:
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            req = {"args": list(args), "cwd": os.path.abspath(cwd or os.getcwd()), "env": env, "stdout": str(out), "stderr": str(err)}
            try:
                self.proc.stdin.write(json.dumps(req) + "\n")
                self.proc.stdin.flush()
                pid = self._line(60)
            except OSError:
                pid = None
            if pid is None:  # the zygote is gone: this and every later command run fresh
                self.ok = False
                return None
            pid = int(pid)
            status = self._line(timeout)
            if status is None:
                os.killpg(pid, signal.SIGKILL)
                self._line(60)
                raise subprocess.TimeoutExpired(["wbc", *args], timeout)
            return subprocess.CompletedProcess([sys.executable, "-m", "wbc.cli", *args], int(status),
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


_zygote: Zygote | None = None


def _forked(args, cwd, env, timeout) -> subprocess.CompletedProcess | None:
    """The command run in a child of the zygote; None where there is none (WBC_TEST_FRESH=1, or it did not start)."""
    global _zygote
    on_ray = "--engine=ray" in args or any(a == "--engine" and b == "ray" for a, b in zip(args, args[1:]))
    if os.environ.get("WBC_TEST_FRESH") == "1" or on_ray or env.get("COLUMNS") != ZYGOTE_COLUMNS:
        return None  # a Ray driver's gRPC threads crash at exit in a forked child; the console's width is fixed on import
    if _zygote is None:
        _zygote = Zygote()
    if not _zygote.ok or _zygote.lock.locked():  # a second thread's command runs fresh rather than wait
        return None
    return _zygote.run(args, cwd, env, timeout)


def cli_telling(module: str) -> str:
    """A `python -c` script running `wbc ARGS` in a fresh interpreter that ends its stderr with "<module> imported" or
    "<module> not imported": what a command loads, seen from outside (the zygote's children have torch and timm)."""
    return f"""import sys
from wbc.cli import main
sys.argv = ["wbc", *sys.argv[1:]]
try:
    main()
finally:
    print("{module} imported" if "{module}" in sys.modules else "{module} not imported", file=sys.stderr)
"""


def run_cli(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `wbc` command in its own process, as a user would: forked from a process that has imported
    torch, timm and wbc already (tests/zygote.py), or a fresh interpreter with WBC_TEST_FRESH=1."""
    e = {**os.environ, "COLUMNS": ZYGOTE_COLUMNS, **(env or {})}
    p = _forked(args, cwd, e, 1800) or subprocess.run([sys.executable, "-m", "wbc.cli", *args], cwd=cwd, capture_output=True,
                                                       text=True, env=e, timeout=1800)
    if check and p.returncode != 0:
        raise AssertionError(f"wbc {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="session")
def wbc_cache(tmp_path_factory) -> Path:
    """A cache for converted ImageNet weights shared by the session's tests."""
    d = tmp_path_factory.mktemp("wbc-cache")
    os.environ["WBC_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def tiny_kaggle(tmp_path_factory) -> Path:
    """A Kaggle-layout copy: TRAIN 24 images a class (from several source cells), TEST 6, TEST_SIMPLE all."""
    root = tmp_path_factory.mktemp("tiny") / "blood-cells"
    base = root / "dataset2-master" / "images"
    for cls in CLASSES:
        for split, step, n in (("TRAIN", 97, 24), ("TEST", 101, 6)):
            files = kaggle_images(split, cls)[::step][:n]  # spread over the folder: many source cells
            (base / split / cls).mkdir(parents=True)
            for f in files:
                shutil.copy(f, base / split / cls / f.name)
        shutil.copytree(KAGGLE / "TEST_SIMPLE" / cls, base / "TEST_SIMPLE" / cls)
    return root


@pytest.fixture(scope="session")
def tiny_pbc(tmp_path_factory) -> Path:
    """A PBC-layout copy: train 10 images a class, test 4 a class, all eight classes."""
    root = tmp_path_factory.mktemp("tinypbc") / "pbc"
    for cls in PBC_CLASSES:
        for split, n in (("train", 10), ("test", 4)):
            (root / split / cls).mkdir(parents=True)
            files = pbc_images(split, cls)
            for f in files[:: len(files) // n][:n]:  # spread over the folder
                shutil.copy(f, root / split / cls / f.name)
    return root
