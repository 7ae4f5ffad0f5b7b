"""BPR matrix factorisation (Rendle et al. 2009): user and item embeddings whose dot product ranks a
user's training item above a uniformly sampled other item, with an L2 penalty on the batch embeddings."""

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


class BPRConfig(Section):
    dim: int = Field(64, ge=1)
    # L2 penalty on the embeddings of each batch.
    reg: float = Field(1e-4, ge=0)


@register("bpr", BPRConfig)
class BPR(Recommender):
    """Matrix factorisation trained to rank each training item above a sampled other item."""

    user_embeddings = True

    def __init__(self, n_users: int, n_items: int, config: BPRConfig, features=None):
        super().__init__(n_users, n_items, config)
        self.reg = config.reg
        self.users = nn.Embedding(n_users, config.dim)
        self.items = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)

    def batches(self, train, batch_size, rng):
        return pair_batches(train, self.n_items, batch_size, rng, self.device)

    def loss(self, batch: dict) -> torch.Tensor:
        u, p, n = self.users(batch["users"]), self.items(batch["pos"]), self.items(batch["neg"])
        margin = (u * p).sum(-1) - (u * n).sum(-1)
        penalty = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(u)
        return -F.logsigmoid(margin).mean() + self.reg * penalty

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.users(users) @ self.items.weight.T

    def item_embeddings(self) -> torch.Tensor:
        return self.items.weight
