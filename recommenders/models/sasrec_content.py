"""SASRec with content: each item is a projection of its frozen content vector (e.g. `text_vec`), plus an
optional learned ID embedding. Everything else — blocks, losses, scoring — is sasrec.py's SASRec.

With `id_embedding: false` an item is its content only, so items that share a text share a
representation; with it, the ID embedding (started at zero) learns what the content misses.

Only items of the training histories compete in the training loss. A held-out item (cold start) would
otherwise only ever be a negative, and its ID embedding would learn to rank it below every trained item;
left out, its ID embedding stays zero and it is ranked by its content.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recommenders.base import trained_items
from recommenders.models.sasrec import SASRec, SASRecConfig
from recommenders.registry import register


class SASRecContentConfig(SASRecConfig):
    # Add a learned ID embedding to the projected content vector (off: items are their content only).
    id_embedding: bool = True


@register("sasrec_content", SASRecContentConfig)
class SASRecContent(SASRec):
    """SASRec over projections of the items' content vectors (plus an ID embedding); ranks items never trained on."""

    item_inputs = "features"

    def __init__(self, n_users: int, n_items: int, config: SASRecContentConfig,
                 features: torch.Tensor | None = None):
        if features is not None:
            features = F.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
        super().__init__(n_users, n_items, config, features)
        if config.id_embedding:
            nn.init.zeros_(self.item_emb.weight)
        else:
            self.item_emb = None
        self.project = nn.Sequential(nn.Linear(features.shape[1], self.hidden), nn.LayerNorm(self.hidden))

    def prepare(self, train: Sequence[np.ndarray]) -> None:
        self.train_candidates = trained_items(train, self.n_items, self.device)

    def item_table(self) -> torch.Tensor:
        table = self.project(self.features) * self.hidden ** -0.5
        return table if self.item_emb is None else table + self.item_emb.weight
