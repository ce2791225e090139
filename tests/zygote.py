"""A process that imports torch, timm and wbc once and forks one child per `wbc` command the tests run.

Why: a fresh `python -m wbc.cli` spends about 4.5 s importing torch and timm (timm reaches torch._dynamo through
torchvision.ops) before it does anything, and the suite runs over a hundred commands. A child forked from here
runs the same `wbc.cli.main()` with its own arguments, working folder, environment and output files, as a fresh
process would, and exits through the interpreter as one does (atexit handlers, buffered output flushed). Nothing
has run a tensor operation here, and only numpy's BLAS has started threads (its own fork handler re-forms them), so
no thread pool is copied half-alive; OpenCV and ONNX Runtime, whose imports start threads, are left to the child.

Protocol (lines of JSON on stdin; plain lines on stdout): "ready" once; then per request {"args", "cwd", "env",
"stdout", "stderr"} the child's pid, and its exit status (negative: killed by that signal) when it ends.
`WBC_TEST_FRESH=1` makes the tests run every command in a fresh interpreter instead (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import sys
import threading

import numpy  # noqa: F401  (its BLAS starts its thread pool here; OpenBLAS re-forms it in a forked child)

_THREADS = len(os.listdir("/proc/self/task"))

import timm  # noqa: E402,F401
import torch  # noqa: E402,F401

import wbc.cli  # noqa: E402  (registers every command; loads no OpenCV or ONNX Runtime, whose imports start threads)


def _child(req: dict, reply) -> None:
    """Become the command: never returns (main() ends in SystemExit, which ends the interpreter)."""
    reply.close()  # the zygote's replies are not the command's to write (closed as an object: nothing closes its number later)
    os.setpgid(0, 0)  # a group of its own, so that a test's timeout kills it with the worker processes it started
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = [os.path.join(os.path.dirname(wbc.cli.__file__), "__main__.py"), *req["args"]]
    sys.modules["__main__"].__package__ = "wbc.cli"  # click names the program "python -m wbc.cli", as that run does
    wbc.cli.main()
    sys.exit(0)


def serve() -> None:
    protocol = os.dup(1)  # replies go here; fd 1 itself is pointed at stderr so a stray print cannot corrupt them
    os.dup2(2, 1)
    reply = os.fdopen(protocol, "w", buffering=1)
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != _THREADS:
        reply.write("threads\n")  # a thread besides numpy's BLAS pool would be copied half-alive: the tests run fresh processes
        return
    reply.write("ready\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req, reply)
        reply.write(f"{pid}\n")
        _, status = os.waitpid(pid, 0)
        reply.write(f"{os.waitstatus_to_exitcode(status)}\n")


if __name__ == "__main__":
    serve()
