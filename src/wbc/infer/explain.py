"""Grad-CAM heat-maps: which pixels of the framed input pushed the model to its class.

pytorch-grad-cam does the work; the explainer keeps its own copy of the network so the hooks
Grad-CAM registers never touch the copy that serves predictions, and a lock because hooks
and gradients are per-model state.
"""

from __future__ import annotations

import copy
import io
import threading

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from wbc.errors import WbcError


def target_layer(model) -> nn.Module:
    """The last convolutional feature map of the backbone (EfficientNet: bn2 after conv_head; Xception: bn4)."""
    b = model.backbone
    for name in ("bn2", "bn4", "act4", "conv_head"):
        if hasattr(b, name) and isinstance(getattr(b, name), nn.Module):
            return getattr(b, name)
    convs = [m for m in b.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise WbcError(f"no convolutional layer to explain in backbone {model.spec.backbone}")
    return convs[-1]


class Explainer:
    def __init__(self, model):
        self.model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
        self.layer = target_layer(self.model)
        self.lock = threading.Lock()

    def heatmap(self, pixels: torch.Tensor, class_index: int | None = None) -> np.ndarray:
        """HxW in 0..1 for one uint8 3xHxW input; class_index None: the predicted class."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = pixels[None].float()
        with self.lock, GradCAM(model=self.model, target_layers=[self.layer]) as cam:
            targets = None if class_index is None else [ClassifierOutputTarget(class_index)]
            return cam(input_tensor=x, targets=targets)[0]


def overlay(pixels: torch.Tensor, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat-map (jet colours) blended over the framed input, HxWx3 uint8."""
    rgb = pixels.permute(1, 2, 0).numpy()
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return (rgb * (1 - alpha) + colours * alpha).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
