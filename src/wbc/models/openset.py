"""How far a cell lies from every cell type the model was trained on: a Mahalanobis distance on the
backbone's features (Lee et al. 2018), class means and one shared covariance of the training cells.

The softmax only ranks the known types against each other: a blast can be "MONOCYTE 0.99". The
distance asks instead whether the features look like any training cell at all. The statistics are
buffers of the network (saved in the model file, inside the ONNX graph), so every engine gives the
same distance. The covariance is shrunk (Ledoit-Wolf) and kept whole: the low-variance directions
are where cells of an unseen type differ most (Kamoi & Kobayashi 2020).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FeatureDistance(nn.Module):
    """features (N x F) -> distance to each class (N x C), root-mean-square over whitened dimensions:
    about 1 for a typical training cell of that class, growing as the cell is unlike it."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("whiten", torch.zeros(n_features, n_features))
        self.register_buffer("means", torch.zeros(n_classes, n_features))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        z = (feats - self.center) @ self.whiten
        d2 = (z * z).sum(1, keepdim=True) - 2 * z @ self.means.T + (self.means * self.means).sum(1)[None]
        return (d2.clamp_min(0) / z.shape[1]).sqrt()

    @torch.no_grad()
    def fit(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Class means and the shrunk shared covariance of training features (labels: class indices)."""
        from sklearn.covariance import LedoitWolf

        x = feats.double().numpy()
        y = labels.numpy()
        center = x.mean(0)
        means = np.stack([x[y == k].mean(0) if (y == k).any() else center for k in range(self.means.shape[0])])
        cov = LedoitWolf(assume_centered=True).fit(x - means[y]).covariance_
        vals, vecs = np.linalg.eigh(cov)
        whiten = vecs / np.sqrt(np.maximum(vals, vals.max() * 1e-6))
        self.center.copy_(torch.from_numpy(center))
        self.whiten.copy_(torch.from_numpy(whiten))
        self.means.copy_(torch.from_numpy((means - center) @ whiten))
