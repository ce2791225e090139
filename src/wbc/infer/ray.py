"""The same collection job on a Ray cluster: Ray tasks frame and classify chunks of files (ONNX
Runtime inside each task), and the driver writes the rows exactly as the local engine does.

    wbc predict /shared/cells --out results.csv --engine ray --address HEAD:6379      # a driver on a cluster node
    wbc predict /shared/cells --out results.csv --engine ray --address ray://HEAD:10001  # from any machine (Ray Client)

Without `--address` a local Ray starts on this machine. Files must be readable at the same path
on every node (a shared file system). The model travels through Ray's object store (the ONNX
bytes; each worker process opens one ONNX Runtime session and keeps it), so nodes need wbc
installed but not the model file. Bad files become error rows, as locally.

Plain tasks rather than Ray Data: they work the same over Ray Client (Ray Data's streaming
executor does not), and a task lost with its node is re-run by Ray elsewhere (`max_retries`), so a
worker node killed mid-run costs time, not rows. Chunks come back in input order, a bounded number
in flight; the driver writes each as it arrives, so `--resume` after a crash redoes nothing written.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import fields

import numpy as np
import torch

from wbc.errors import WbcError
from wbc.image.framing import Framed
from wbc.infer.batch import Outcome
from wbc.infer.predictor import needs_recheck, with_recheck
from wbc.infer.ray_cluster import prepare

CHUNK = 64  # files a task: framing dominates, so a chunk is ~1 s of one core
RETRIES = 3  # a task whose node dies is re-run this many times elsewhere

log = logging.getLogger(__name__)
_SESSIONS: dict = {}  # per worker process: model key -> ONNX Runtime session


FRAMED_FIELDS = [f.name for f in fields(Framed) if f.name != "pixels"]  # what travels back: all but the pixels


def _session(key: str, model_bytes: bytes):
    if key not in _SESSIONS:
        import onnxruntime as ort

        from wbc.infer.engines import session_options

        _SESSIONS[key] = ort.InferenceSession(model_bytes, session_options(1), providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def classify_chunk(model_bytes: bytes, key: str, spec_dict: dict, px_per_um: float | None, paths: list[str]) -> dict:
    """On a worker: frame every file (a bad one becomes its error), classify the rest in one ONNX batch."""
    from wbc.infer.batch import frame_file
    from wbc.infer.predictor import answers_in_colours, beyond, colour_distance
    from wbc.models.classifier import ModelSpec
    from wbc.models.colours import ColourCheck

    spec = ModelSpec.from_dict(spec_dict)
    check = ColourCheck.from_spec(spec.colours)
    rows, pixels = [], []
    for path in paths:
        _, f, err = frame_file(path, spec, px_per_um)
        if f is None:
            rows.append((path, err, {}))
            continue
        rows.append((path, "", {k: getattr(f, k) for k in FRAMED_FIELDS} | {"colour": colour_distance(check, f.pixels)}))
        pixels.append(f.pixels.numpy())
    probs, dist = np.zeros((0, len(spec.classes)), np.float32), None
    if pixels:
        session = _session(key, model_bytes)

        def run(batch) -> np.ndarray:
            return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(np.asarray(batch))})

        out = run(np.stack(pixels))
        probs, dist = out[0], out[1] if len(out) > 1 else None
        good = [r[2] for r in rows if not r[1]]
        unsure = probs.max(axis=1) < spec.review_threshold
        unsure |= np.isin(probs.argmax(axis=1), spec.always_reviewed_ids())
        if dist is not None:
            unsure |= np.asarray([beyond(float(d), spec.near_distance) for d in dist])
        far = [i for i, g in enumerate(good) if check is not None and check.asks_again(g["colour"]) and not unsure[i]]
        if far:  # the pixels do not travel back: each far sure cell's answers in the sources' colours do (the driver
            # decides with its other reasons; a cell already flagged unsure or unlike the training cells is never asked)
            seen = answers_in_colours(check, list(spec.classes), [pixels[i] for i in far], lambda b: run(b)[0])
            for i, s in zip(far, seen):
                good[i]["recoloured"] = s
    return {"rows": rows, "probs": probs, "distance": dist}


def _onnx_bytes(predictor) -> bytes:
    from wbc.models.export import cached_onnx

    path = predictor.path if predictor.path.suffix.lower() == ".onnx" else cached_onnx(predictor)
    return path.read_bytes()


def _quiet_ray_loggers() -> None:
    for name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
        logging.getLogger(name).setLevel(logging.ERROR)


def connect(address: str | None) -> None:
    """Join the cluster at `address` (checked first: reachable, token sent and accepted; wbc.infer.ray_cluster)
    or start a local Ray on this machine (None)."""
    import ray

    if ray.is_initialized():
        return
    _quiet_ray_loggers()
    kw: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        addr = prepare(address)
        kw = {"log_to_driver": False} if addr.client else kw
        if addr.loopback and not addr.client:
            kw["_node_ip_address"] = "127.0.0.1" if addr.host == "localhost" else addr.host  # beside a loopback head: its node
    else:
        kw.update(num_cpus=os.cpu_count() or 1, object_store_memory=300 * 1024**2)
    _init(ray, address, kw)
    _quiet_ray_loggers()
    _route_cluster_messages()


CLIENT_TRIES = 3  # the Ray Client server starts a driver process per client; on a busy head that start can time out


def _init(ray, address: str | None, kw: dict) -> None:
    """ray.init, once more (up to CLIENT_TRIES) when a Ray Client server failed to start this client's driver in time:
    a busy head, not a wrong address (that was checked already). Any other failure is one line."""
    for attempt in range(1, CLIENT_TRIES + 1):
        try:
            ray.init(address=address or "local", **kw)  # "local": a Ray of our own, never some other cluster found here
            return
        except Exception as e:  # version mismatch, a head that went away, ...
            first = str(e).splitlines()[0][:160] if str(e).strip() else type(e).__name__
            if address and address.startswith("ray://") and "Initialization failure" in str(e) and attempt < CLIENT_TRIES:
                log.warning(f"Ray Client at {address} could not start this client's driver ({first}); trying again")
                time.sleep(2 * attempt)
                continue
            raise WbcError(f"cannot start or reach Ray{' at ' + address if address else ''}: {first}") from None


def _route_cluster_messages() -> None:
    """Ray prints the cluster's error messages (a node lost, a task retried, with pages of state dump)
    straight to stdout, where they would mix with `--format csv` rows: send their first lines to the log."""
    import ray._private.worker as ray_worker

    def to_log(data: dict, *args, **kwargs) -> None:
        for text in data.get("lines", []):
            first = str(text).strip().splitlines()[0] if str(text).strip() else ""
            if first:
                log.warning(f"Ray: {first[:220]}")

    ray_worker.print_to_stdstream = to_log


def _outcomes(predictor, result: dict) -> list[Outcome]:
    out, probs = [], iter(result["probs"])
    dist = iter(result["distance"]) if result.get("distance") is not None else None
    for path, err, framed in result["rows"]:
        if err:
            out.append(Outcome(path, None, err))
            continue
        colour, seen = framed.pop("colour", None), framed.pop("recoloured", None)
        f = Framed(pixels=None, **framed)  # the pixels stay on the worker
        p = torch.from_numpy(np.array(next(probs), np.float32))
        answer = predictor.to_prediction(p, path, f, float(next(dist)) if dist is not None else None, recheck=False,
                                         colour=colour)  # measured beside the pixels, which do not travel back
        if seen and needs_recheck(answer, predictor.colour_check, predictor.classes):
            with_recheck(answer, seen)
        out.append(Outcome(path, answer))
    return out


def ray_stream(address: str | None, in_flight: int | None = None):
    """A stream function for wbc.infer.batch.run_collection that runs on Ray (local when `address` is None).
    The cluster is joined now, so a bad address or token is said before any work starts."""
    try:
        import ray
    except ImportError:
        raise WbcError("--engine ray needs Ray: pip install 'ray[default,client]' (or pip install 'wbc[ray]')") from None
    connect(address)

    def stream(predictor, files: list[str], batch_size: int = 32, workers: int = 0, px_per_um: float | None = None):
        if not files:
            return
        connect(address)  # already joined, unless the caller shut Ray down in between
        import hashlib

        data = _onnx_bytes(predictor)
        key = hashlib.sha256(data).hexdigest()[:16]
        model_ref = ray.put(data)
        task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(classify_chunk)
        limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
        pending: deque = deque()
        spec = predictor.spec.to_dict()
        for chunk in chunks:
            pending.append(task.remote(model_ref, key, spec, px_per_um, chunk))
            if len(pending) >= limit:
                yield _outcomes(predictor, _get(pending.popleft(), address))
        while pending:
            yield _outcomes(predictor, _get(pending.popleft(), address))

    return stream


def _get(ref, address: str | None) -> dict:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        where = f" at {address}" if address else ""
        raise WbcError(f"the Ray cluster{where} lost a task after {RETRIES} retries ({type(e).__name__}); the rows written so far "
                       "are kept: run the same command with --resume to finish") from None
