"""LightGCN (He et al. 2020): embeddings smoothed over the normalised user-item graph, no transforms.

Final embeddings are the mean of layers 0..L of E_{l+1} = D^-1/2 A D^-1/2 E_l, trained with BPR. The
graph is built from the training interactions in `prepare`; the propagated embeddings of the last
evaluation are kept as buffers, so a loaded checkpoint scores without the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import Section
from recommenders.base import Recommender, pair_batches
from recommenders.registry import register


class LightGCNConfig(Section):
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0, le=8)
    reg: float = Field(1e-4, ge=0)


@register("lightgcn", LightGCNConfig)
class LightGCN(Recommender):
    """User and item embeddings smoothed over the interaction graph, trained with BPR."""

    user_embeddings = True

    def __init__(self, n_users: int, n_items: int, config: LightGCNConfig, features=None):
        super().__init__(n_users, n_items, config)
        self.layers, self.reg = config.layers, config.reg
        self.embedding = nn.Embedding(n_users + n_items, config.dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.register_buffer("final", torch.zeros(n_users + n_items, config.dim))
        self.graph: torch.Tensor | None = None
        self.stale = True  # the parameters changed since `final` was last propagated

    def prepare(self, train: Sequence[np.ndarray]) -> None:
        users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(train)])
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) + self.n_users
        pairs = np.unique(np.stack([users, items]), axis=1)
        edges = np.concatenate([pairs, pairs[::-1]], axis=1)
        n = self.n_users + self.n_items
        degree = np.bincount(edges[0], minlength=n).astype(np.float32)
        inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1)), 0.0)
        values = inv_sqrt[edges[0]] * inv_sqrt[edges[1]]
        self.graph = torch.sparse_coo_tensor(torch.from_numpy(edges), torch.from_numpy(values.astype(np.float32)),
                                             (n, n), check_invariants=False).coalesce().to(self.device)

    def propagate(self) -> torch.Tensor:
        layer = self.embedding.weight
        total = layer
        for _ in range(self.layers):
            layer = torch.sparse.mm(self.graph, layer)
            total = total + layer
        return total / (self.layers + 1)

    def batches(self, train, batch_size, rng):
        return pair_batches(train, self.n_items, batch_size, rng, self.device)

    def loss(self, batch: dict) -> torch.Tensor:
        self.stale = True
        final = self.propagate()
        users, pos, neg = batch["users"], batch["pos"] + self.n_users, batch["neg"] + self.n_users
        margin = (final[users] * final[pos]).sum(-1) - (final[users] * final[neg]).sum(-1)
        base = self.embedding.weight
        penalty = (base[users].pow(2).sum() + base[pos].pow(2).sum() + base[neg].pow(2).sum()) / len(users)
        return -F.logsigmoid(margin).mean() + self.reg * penalty

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        if self.graph is not None and self.stale:
            with torch.no_grad():
                self.final.copy_(self.propagate())
            self.stale = False
        return self.final[users] @ self.final[self.n_users:].T

    def item_embeddings(self) -> torch.Tensor:
        return self.final[self.n_users:]

    def on_weights_loaded(self) -> None:
        self.stale = True  # `final` is propagated again from the loaded embeddings before the next score

    def _apply(self, fn, *args, **kwargs):
        # Keep the (non-parameter) graph on the module's device when it moves.
        super()._apply(fn, *args, **kwargs)
        if self.graph is not None:
            self.graph = fn(self.graph)
        return self
