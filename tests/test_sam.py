"""Sharpness-aware round-2 steps (`wbc train --sam`): the gradient is the one at the neighbourhood's steepest point."""

import copy

import torch
import torch.nn.functional as F

from wbc.training.train import sharpness_aware


def test_the_gradient_is_taken_at_the_weights_moved_rho_along_the_normalised_gradient():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).train()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    before = copy.deepcopy(net.state_dict())
    loss(net).backward()
    plain = [p.grad.clone() for p in net.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in plain]))
    moved = copy.deepcopy(net)
    moved.load_state_dict(before)  # the running statistics as they were before any forward pass
    with torch.no_grad():
        for p, g in zip(moved.parameters(), plain):
            p.add_(g * 0.05 / norm)
    loss(moved).backward()
    state = copy.deepcopy(net.state_dict())
    sharpness_aware(net, lambda: loss(net), 0.05)
    for p, q in zip(net.parameters(), moved.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)  # SAM's gradient
    assert not all(torch.allclose(p.grad, g) for p, g in zip(net.parameters(), plain))
    for k, v in net.state_dict().items():  # weights back where they were, batch-norm statistics untouched by the second pass
        assert torch.allclose(v.float(), state[k].float()), k
