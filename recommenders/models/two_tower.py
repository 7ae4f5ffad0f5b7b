"""Two-tower retrieval over content vectors; it ranks items it never saw in training (cold start).

- Item tower: an MLP over the item's frozen content vector (plus an optional learned ID embedding, zero
  for items never trained), L2-normalised.
- User tower: the mean of the item-tower outputs of the user's last `max_len` items, through a residual
  MLP, L2-normalised. Training uses every prefix of each sequence at once (a causal running mean).
- Loss: softmax over candidates with a temperature. "inbatch": the candidates are the batch's distinct
  target items; "sampled": also `negatives` uniform draws from the items seen in training (never from
  held-out items, which would teach the model to push cold items down).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import Section
from recommenders.base import Recommender, sequence_batches, trained_items
from recommenders.evaluate import pad_histories
from recommenders.registry import register


class TwoTowerConfig(Section):
    dim: int = Field(64, ge=8)
    hidden: int = Field(256, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    # Learned per-item ID embedding added to the content tower (cold items keep a zero ID embedding).
    id_embedding: bool = False
    max_len: int = Field(50, ge=1)
    # inbatch: the batch's other target items are the negatives; sampled: plus uniform training-item negatives.
    loss: Literal["inbatch", "sampled"] = "sampled"
    negatives: int = Field(256, ge=1)
    temperature: float = Field(0.07, gt=0)


def mlp(inputs: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


@register("two_tower", TwoTowerConfig)
class TwoTower(Recommender):
    """Item tower over content vectors, user tower over the history; ranks items never trained on."""

    item_inputs = "features"

    def __init__(self, n_users: int, n_items: int, config: TwoTowerConfig, features: torch.Tensor | None = None):
        if features is not None:
            features = F.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
        super().__init__(n_users, n_items, config, features)
        dim, hidden, dropout = config.dim, config.hidden, config.dropout
        self.max_len, self.loss_kind = config.max_len, config.loss
        self.negatives, self.temperature = config.negatives, config.temperature
        self.item_tower = mlp(self.features.shape[1], hidden, dim, dropout)
        self.item_id = nn.Embedding(n_items, dim) if config.id_embedding else None
        if self.item_id is not None:
            nn.init.zeros_(self.item_id.weight)
        self.user_tower = mlp(dim, hidden, dim, dropout)
        # Items seen in training: the only ones drawn as sampled negatives.
        self.register_buffer("trained", torch.ones(n_items, dtype=torch.bool))

    def prepare(self, train: Sequence[np.ndarray]) -> None:
        self.trained.copy_(trained_items(train, self.n_items, self.device))

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        index = torch.arange(self.n_items, device=self.device) if items is None else items
        vectors = self.item_tower(self.features[index])
        if self.item_id is not None:
            vectors = vectors + self.item_id(index)
        return F.normalize(vectors, dim=-1)

    def user_vectors(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, L, dim): position t holds the user vector of the prefix up to t (left-padded inputs)."""
        valid = (inputs >= 0)[..., None].float()
        items = self.item_vectors(inputs.clamp(min=0)) * valid
        mean = items.cumsum(1) / valid.cumsum(1).clamp(min=1)
        return F.normalize(mean + self.user_tower(mean), dim=-1)

    def batches(self, train, batch_size, rng):
        return sequence_batches(train, self.max_len, batch_size, rng, self.device)

    def loss(self, batch: dict) -> torch.Tensor:
        targets = batch["targets"]
        keep = targets >= 0
        users = self.user_vectors(batch["inputs"])[keep]
        positives = targets[keep]
        candidates = positives
        if self.loss_kind == "sampled":
            pool = self.trained.nonzero().squeeze(1)
            draw = torch.randint(0, len(pool), (self.negatives,), device=targets.device)
            candidates = torch.cat([positives, pool[draw]])
        candidates = torch.unique(candidates)  # sorted, so each target's column is found by searchsorted
        logits = users @ self.item_vectors(candidates).T / self.temperature
        return F.cross_entropy(logits, torch.searchsorted(candidates, positives))

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        inputs = pad_histories(histories, self.max_len).to(self.device)
        return self.user_vectors(inputs)[:, -1] @ self.item_vectors().T

    def item_embeddings(self) -> torch.Tensor:
        return self.item_vectors()
