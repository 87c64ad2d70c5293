"""A logistic-regression stand-in for the PRM: the correction's toy problem (tests and bench)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ToyBatch:
    """The fields of a ``StepBatch`` the correction and ``inner_step`` read, over feature rows."""

    x: torch.Tensor
    targets: torch.Tensor
    label_ids: torch.Tensor
    is_final: torch.Tensor

    def to(self, device: torch.device | str) -> ToyBatch:
        return self


class ToyPRM(nn.Module):
    """``head(x)``: one logit per row, with the PRM's ``step_features`` / ``step_logits`` API."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(dim, 1)

    def step_features(self, batch: ToyBatch) -> torch.Tensor:
        return batch.x

    def step_logits(self, batch: ToyBatch) -> torch.Tensor:
        return self.head(batch.x).squeeze(-1)

    def forward(self, batch: ToyBatch, with_features: bool = False):
        z = self.step_logits(batch)
        return (z, batch.x) if with_features else z

    def trainable_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]


@dataclass
class ToyProblem:
    train_x: torch.Tensor
    truth: torch.Tensor
    noisy: torch.Tensor
    flipped: torch.Tensor
    meta_x: torch.Tensor
    meta_y: torch.Tensor


def make_problem(n: int = 240, dim: int = 8, flip: float = 0.3, n_meta: int = 64, seed: int = 0) -> ToyProblem:
    """Separable data from a linear teacher; ``flip`` of the training labels flipped, the meta set clean."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g)
    x = torch.randn(n + n_meta, dim, generator=g)
    y = (x @ w > 0).float()
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[torch.randperm(n, generator=g)[: int(flip * n)]] = True
    noisy = torch.where(flipped, 1 - y[:n], y[:n])
    return ToyProblem(x[:n], y[:n], noisy, flipped, x[n:], y[n:])


def batches(p: ToyProblem, batch_size: int, epochs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(p.noisy), generator=g)
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            yield ToyBatch(p.train_x[idx], p.noisy[idx], idx, torch.zeros(len(idx), dtype=torch.bool))


def meta_batches(p: ToyProblem, batch_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed + 1)
    for _ in itertools.count():
        idx = torch.randperm(len(p.meta_y), generator=g)[:batch_size]
        yield ToyBatch(p.meta_x[idx], p.meta_y[idx], torch.full((len(idx),), -1), torch.ones(len(idx), dtype=torch.bool))
