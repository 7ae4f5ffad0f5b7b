"""Popularity: every user gets the items with the most training interactions. The baseline to beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.config import Section
from recommenders.base import Recommender
from recommenders.registry import register


class PopularityConfig(Section):
    pass


@register("popularity", PopularityConfig)
class Popularity(Recommender):
    """Every user gets the items with the most training interactions."""

    trainable = False

    def __init__(self, n_users: int, n_items: int, config: PopularityConfig, features=None):
        super().__init__(n_users, n_items, config)
        self.register_buffer("counts", torch.zeros(n_items))

    def prepare(self, train: Sequence[np.ndarray]) -> None:
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) if len(train) else np.zeros(0, int)
        self.counts.copy_(torch.from_numpy(np.bincount(items, minlength=self.n_items).astype(np.float32)))

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.counts.expand(len(users), -1)
