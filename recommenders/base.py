"""The one small interface every recommender shares (as in cornac), plus the batch makers they reuse.

A model is built from the dataset's sizes, its hyperparameters and (for content models) the item feature
matrix, which it keeps as a buffer so that a checkpoint is self-contained. Then:

- `prepare(train)`: statistics that need no gradient (popularity counts, the LightGCN graph);
- `batches(train, batch_size, rng)` + `loss(batch)`: what the shared training loop (`recommenders.train`)
  iterates over, for models with `trainable = True`;
- `score(users, histories) -> (B, n_items)`: scores of all items for a batch of users. `users` are user
  indexes (for models with user embeddings) and `histories` their item sequences (for sequential and
  content models); every model gets both and uses what it needs;
- `recommend(users, histories, k)`: the top k items, history excluded by default;
- `item_embeddings()`: one vector per item, for export to the store (None where a model has none).

Evaluation is not here: `recommenders.evaluate` ranks what `score` returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from recommenders.evaluate import pad_histories


class Recommender(nn.Module):
    name = "base"
    trainable = True
    needs_features = False

    def __init__(self, n_users: int, n_items: int, features: torch.Tensor | None = None, **hparams):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.hparams = dict(hparams)
        if features is not None:
            self.register_buffer("features", torch.as_tensor(features, dtype=torch.float32))
        else:
            self.features = None

    @property
    def device(self) -> torch.device:
        for tensor in [*self.parameters(), *self.buffers()]:
            return tensor.device
        return torch.device("cpu")

    def prepare(self, train: Sequence[np.ndarray]) -> None:
        """Fit what needs no gradient. The default does nothing."""

    def batches(self, train: Sequence[np.ndarray], batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
        raise NotImplementedError

    def loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def recommend(self, users: torch.Tensor, histories: Sequence[np.ndarray], k: int = 10,
                  exclude_history: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, item indexes) of the top k items per user; ties go to the lower item index."""
        scores = self.score(users.to(self.device), histories).float()
        if exclude_history:
            for row, history in enumerate(histories):
                scores[row, torch.as_tensor(history, dtype=torch.long, device=scores.device)] = -torch.inf
        return torch.topk(scores, min(k, self.n_items), dim=1, sorted=True)


# ---- batch makers shared by several models ---------------------------------------------------------------
BUCKET_POOL = 50  # batches per pool sorted by length: wide enough to bucket, narrow enough to stay random


def shuffled_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     length_buckets: bool = False) -> list[np.ndarray]:
    """Indexes of examples in random batches. With `length_buckets`, the shuffled examples are sorted by
    length within pools of BUCKET_POOL batches, cut into batches and the batches shuffled: a batch is padded
    to its own longest example, so on skewed data (most histories short, a few at the cap) the model runs
    on several times fewer padded positions, while each batch still mixes users from the whole catalogue."""
    order = rng.permutation(len(lengths))
    if not length_buckets:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    groups = []
    pool = BUCKET_POOL * batch_size
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        groups += [chunk[at:at + batch_size] for at in range(0, len(chunk), batch_size)]
    return [groups[i] for i in rng.permutation(len(groups))]


def sequence_batches(train: Sequence[np.ndarray], max_len: int, batch_size: int, rng: np.random.Generator,
                     device: torch.device, length_buckets: bool = False) -> Iterator[dict]:
    """Next-item batches: inputs seq[:-1] and targets seq[1:], the last max_len of each, left-padded with -1.

    Each batch carries `positions`, the number of target positions a batch of its size has on average over
    the epoch: a loss summed over positions and divided by it weighs every position alike whichever batch
    it falls in (with length buckets, a per-batch mean would favour the short-sequence batches)."""
    users = np.array([u for u, s in enumerate(train) if len(s) >= 2], dtype=np.int64)
    lengths = np.array([min(len(train[u]) - 1, max_len) for u in users], dtype=np.int64)
    per_user = float(lengths.mean()) if len(users) else 0.0
    for group in shuffled_batches(lengths, batch_size, rng, length_buckets):
        chosen = users[group]
        inputs = pad_histories([train[u][:-1] for u in chosen], max_len)
        targets = pad_histories([train[u][1:] for u in chosen], max_len)
        yield {"users": torch.from_numpy(chosen).to(device), "inputs": inputs.to(device),
               "targets": targets.to(device), "positions": per_user * len(chosen)}


def pair_batches(train: Sequence[np.ndarray], n_items: int, batch_size: int, rng: np.random.Generator,
                 device: torch.device) -> Iterator[dict]:
    """(user, positive, negative) triples over all training interactions, one uniform negative each.

    A negative that hits one of the user's training items is redrawn once (rarely twice needed at these
    densities)."""
    users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(train)])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train])
    seen = np.unique(users * n_items + items)
    order = rng.permutation(len(users))
    users, items = users[order], items[order]
    negatives = rng.integers(0, n_items, len(users))
    clash = np.isin(users * n_items + negatives, seen)
    negatives[clash] = rng.integers(0, n_items, int(clash.sum()))
    for start in range(0, len(users), batch_size):
        window = slice(start, start + batch_size)
        yield {"users": torch.from_numpy(users[window]).to(device), "pos": torch.from_numpy(items[window]).to(device),
               "neg": torch.from_numpy(negatives[window]).to(device)}
