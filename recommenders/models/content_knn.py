"""Content kNN: the cosine between the mean of a user's history content vectors and every item's vector.

No training. Items without a content vector (zero rows) score 0. It ranks items nobody interacted with,
so it is the simplest cold-start baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import Section
from recommenders.base import Recommender
from recommenders.registry import register


class ContentKNNConfig(Section):
    pass


@register("content_knn", ContentKNNConfig)
class ContentKNN(Recommender):
    """Cosine between the mean content vector of a user's history and each item's; no training."""

    trainable = False
    item_inputs = "features"

    def __init__(self, n_users: int, n_items: int, config: ContentKNNConfig, features: torch.Tensor | None = None):
        if features is not None:
            features = F.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
        super().__init__(n_users, n_items, config, features)

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        profiles = torch.stack([self.features[torch.as_tensor(h, dtype=torch.long, device=self.device)].mean(0)
                                if len(h) else torch.zeros(self.features.shape[1], device=self.device)
                                for h in histories])
        return F.normalize(profiles, dim=1) @ self.features.T

    def item_embeddings(self) -> torch.Tensor:
        return self.features
