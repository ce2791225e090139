"""The Ray cluster path as a user walks it, from docs/guide.md's "On a cluster" commands run as written:
a head started with `ray start --head` and token authentication on, a second node joined with
`ray start --address` (two raylets on loopback addresses, 127.0.0.2 and 127.0.0.3, standing for two
machines), `wbc predict --engine ray --address ...` in a process of its own, by the head's address
and through Ray Client; the mistakes a user makes (no token, a wrong token, a wrong port); a worker
node killed mid-run; then only the processes this test started are stopped."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, KAGGLE

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guide_commands() -> list[str]:
    """The commands of docs/guide.md's "On a cluster" block, in order."""
    text = (ROOT / "docs" / "guide.md").read_text()
    block = text.split("## On a cluster", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # as a fresh shell: nothing set by hand
    env.update(HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '')}", COLUMNS="200", **extra)
    return env


def _run(cmd: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


class Cluster:
    """The guide's commands with this machine's addresses and test-only settings filled in."""

    def __init__(self, folder: Path):
        self.temp = Path(tempfile.mkdtemp(prefix="wr", dir="/tmp"))  # short: Ray's socket paths are length-limited
        self.home = self.temp / "home"
        self.home.mkdir()
        self.port, self.client_port = _free_port(), _free_port()
        self.folder = folder
        cmds = guide_commands()
        self.make_token, self.start_head, self.join, self.drive, self.drive_client = cmds

    def fill(self, cmd: str, out: Path | None = None) -> str:
        cmd = cmd.replace("ray://HEAD:10001", f"ray://{HEAD_IP}:{self.client_port}").replace("HEAD:6379", f"{HEAD_IP}:{self.port}")
        cmd = cmd.replace("--port 6379", f"--port {self.port}").replace("/shared/cells", str(self.folder))
        if out is not None:
            cmd = cmd.replace("results.csv", str(out))
        common = " --num-cpus 1 --disable-usage-stats"
        if cmd.startswith("ray start --head"):
            cmd += (f" --node-ip-address {HEAD_IP} --temp-dir {self.temp} --include-dashboard false"
                    f" --ray-client-server-port {self.client_port}" + common)
        elif "ray start --address" in cmd:
            cmd += f" --node-ip-address {WORKER_IP}" + common
        return cmd

    def start(self) -> None:
        env = _env(self.home)
        for cmd in (self.make_token, self.start_head, self.join):
            p = _run(self.fill(cmd), env)
            assert p.returncode == 0, f"{self.fill(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        assert (self.home / ".ray" / "auth_token").is_file()

    def ours(self) -> list:
        """Every process this cluster started: those whose command line names its temp folder or its head's
        address, and their descendants (Ray's workers rename themselves `ray::...`)."""
        marks = (str(self.temp), f"{HEAD_IP}:{self.port}")
        mine: dict = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(m in " ".join(proc.info["cmdline"] or []) for m in marks):
                    for p in (proc, *proc.children(recursive=True)):
                        mine[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [p for p in mine.values() if _alive(p)]

    def worker_raylet(self):
        return next(p for p in self.ours() if "raylet/raylet" in " ".join(p.cmdline()) and f"node_ip_address={WORKER_IP}" in " ".join(p.cmdline()))

    def stop(self) -> None:
        """`ray stop`, but for exactly this cluster's processes (others on this machine are left alone)."""
        for proc in self.ours():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(self.ours(), timeout=30)
        shutil.rmtree(self.temp, ignore_errors=True)


def _alive(proc) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """200 real TEST images and one damaged file."""
    root = tmp_path_factory.mktemp("cells")
    for cls in CLASSES:
        for f in sorted((KAGGLE / "TEST" / cls).glob("*.jpeg"))[::12][:50]:
            shutil.copy(f, root / f"{cls.lower()}_{f.name}")
    (root / "damaged.jpeg").write_bytes(next((KAGGLE / "TEST" / "MONOCYTE").glob("*.jpeg")).read_bytes()[:2500])
    return root


@pytest.fixture(scope="module")
def cluster(folder, wbc_cache):
    c = Cluster(folder)
    try:
        c.start()
        yield c
    finally:
        c.stop()
    assert c.ours() == []


@pytest.fixture(scope="module")
def local_rows(folder, tmp_path_factory, wbc_cache):
    out = tmp_path_factory.mktemp("local") / "local.csv"
    subprocess.run([sys.executable, "-m", "wbc.cli", "predict", str(folder), "--out", str(out), "--engine", "onnx"],
                   capture_output=True, text=True, timeout=900, env={**os.environ, "WBC_CACHE": str(wbc_cache)})
    return _rows(out)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same_as_local(rows: list[dict], local: list[dict]) -> None:
    assert [r["path"] for r in rows] == [r["path"] for r in local]  # every file once, in input order
    cols = [k for k in local[0] if k.startswith("p_")]
    for a, b in zip(rows, local):
        assert a["class"] == b["class"] and bool(a["error"]) == bool(b["error"])
        if not b["error"]:
            assert np.abs(np.array([float(a[k]) for k in cols]) - np.array([float(b[k]) for k in cols])).max() < 1e-5


def test_the_guides_cluster_commands_classify_like_the_local_engine(cluster, local_rows, tmp_path, wbc_cache):
    env = _env(cluster.home, WBC_CACHE=str(wbc_cache))  # no RAY_AUTH_MODE: wbc finds ~/.ray/auth_token itself
    for cmd in (cluster.drive, cluster.drive_client):
        out = tmp_path / f"{'client' if 'ray://' in cmd else 'gcs'}.csv"
        p = _run(cluster.fill(cmd, out), env, timeout=900)
        assert p.returncode == 1, p.stderr[-3000:]  # the damaged file fails, the rest are classified
        assert "Traceback" not in p.stderr and "InvalidAuthToken" not in p.stderr
        assert "200 classified, 1 failed" in p.stderr
        _same_as_local(_rows(out), local_rows)


@pytest.mark.parametrize("mistake", ["no token", "wrong token", "wrong port", "no token, Ray Client"])
def test_cluster_mistakes_are_one_line_errors(cluster, mistake, tmp_path, wbc_cache):
    empty = tmp_path / "home"
    empty.mkdir()
    env = _env(empty if "no token" in mistake else cluster.home, WBC_CACHE=str(wbc_cache))
    if mistake == "wrong token":
        env["RAY_AUTH_TOKEN"] = "0" * 64
    cmd = cluster.fill(cluster.drive_client if "Client" in mistake else cluster.drive, tmp_path / "r.csv")
    if mistake == "wrong port":
        cmd = cmd.replace(f":{cluster.port}", f":{_free_port()}")
    p = _run(cmd, env, timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), p.stderr[-3000:]
    expected = {"no token": "has no token", "wrong token": "refused this machine's token", "wrong port": "cannot reach a Ray head",
                "no token, Ray Client": "has no token"}[mistake]
    assert expected in lines[0] and ("ray get-auth-token" in lines[0] or "ray start --head" in lines[0])
    assert not (tmp_path / "r.csv").exists()  # nothing written before the cluster was checked


def test_worker_node_killed_mid_run_then_driver_killed_and_resumed(cluster, local_rows, tmp_path, wbc_cache):
    env = _env(cluster.home, WBC_CACHE=str(wbc_cache))
    out = tmp_path / "r.csv"
    run = subprocess.Popen(cluster.fill(cluster.drive, out), shell=True, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    _wait_rows(out, 65, run)
    cluster.worker_raylet().kill()  # the second machine goes away mid-run
    _, err = run.communicate(timeout=900)
    if run.returncode not in (0, 1):  # it may stop, but then with one clear line, and --resume finishes it
        assert "--resume" in err and "Traceback" not in err, err[-3000:]
        _run(cluster.fill(cluster.drive, out) + " --resume", env, timeout=900)
    _same_as_local(_rows(out), local_rows)

    # the driver itself killed mid-run: --resume completes it, nothing lost or written twice
    out2 = tmp_path / "r2.csv"
    run = subprocess.Popen(cluster.fill(cluster.drive, out2), shell=True, env=env, cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_rows(out2, 65, run)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert len(_rows(out2)) < 201
    p = _run(cluster.fill(cluster.drive, out2) + " --resume", env, timeout=900)
    assert p.returncode in (0, 1) and re.search(r"\d+ already in", p.stderr), p.stderr[-3000:]  # 1 if the damaged file was left
    _same_as_local(_rows(out2), local_rows)


def _wait_rows(path: Path, n: int, run: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and run.poll() is None:
        if path.is_file() and path.read_text().count("\n") > n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {n} rows while the run was going (exit {run.poll()})")
