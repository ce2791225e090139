"""Pick the device and CPU threading once."""

from __future__ import annotations

import os

import torch


def pick_device(name: str = "auto", threads: int | None = None) -> torch.device:
    torch.set_num_threads(threads or os.cpu_count() or 1)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)
