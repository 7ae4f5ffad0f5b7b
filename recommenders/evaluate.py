"""Full-ranking evaluation, shared by every model (it never lives inside one).

Each evaluated user has one target item. A model scores all items for a batch of users; the target's rank
is computed on the device, vectorised, so 22k users x 12k items take seconds.

- History masking (on by default): the items of the user's history (the training items; for test also the
  validation item, since it is part of the test history) are removed from the ranking. The target itself
  is never masked, even when the user consumed it before.
- Ties are pessimistic: rank = (items with a strictly greater score) + (other items with an equal score),
  0-based. A model that gives many items the same score cannot win by the order of item indexes, and a
  constant scorer ranks every target last.
- Recall@K = 1 if rank < K (one target, so it equals HR@K); NDCG@K = 1 / log2(rank + 2) if rank < K.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recommenders.data import EvalSet, RecommenderError

KS = (5, 10, 20)
PAD = -1


def pad_histories(histories: Sequence[np.ndarray], max_len: int | None = None, pad: int = PAD) -> torch.Tensor:
    """Left-padded (B, L) LongTensor of the last max_len items of each history (most recent at the right)."""
    cut = [h[-max_len:] if max_len else h for h in histories]
    width = max(1, max((len(h) for h in cut), default=1))
    out = np.full((len(cut), width), pad, dtype=np.int64)
    for row, h in enumerate(cut):
        if len(h):
            out[row, width - len(h):] = h
    return torch.from_numpy(out)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # recall@5, ndcg@5, ... averaged over users
    ranks: np.ndarray  # per user, 0-based pessimistic rank of the target
    users: np.ndarray
    targets: np.ndarray
    mask_history: bool

    def per_user(self, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
        out = {"user": self.users, "target": self.targets, "rank": self.ranks}
        for k in ks:
            hit = self.ranks < k
            out[f"recall@{k}"] = hit.astype(np.float64)
            out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(self.ranks + 2.0), 0.0)
        return out


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask_rows: torch.Tensor | None = None,
                 mask_cols: torch.Tensor | None = None) -> torch.Tensor:
    """Pessimistic 0-based rank of each row's target among all columns, leaving out masked (row, col) pairs.

    rank = #(other items with score >= the target's) over unmasked items. Computed without copying the score
    matrix: count over all items, then subtract the masked items that would have counted."""
    if torch.isnan(scores).any():
        raise RecommenderError("the model produced NaN scores")
    rows = torch.arange(len(targets), device=scores.device)
    target_scores = scores[rows, targets]
    ranks = (scores >= target_scores[:, None]).sum(1) - 1
    if mask_rows is not None and len(mask_rows):
        keys = torch.unique(mask_rows * scores.shape[1] + mask_cols)  # a repeated history item counts once
        mask_rows, mask_cols = keys // scores.shape[1], keys % scores.shape[1]
        counted = (scores[mask_rows, mask_cols] >= target_scores[mask_rows]) & (mask_cols != targets[mask_rows])
        ranks = ranks - torch.zeros_like(ranks).index_add_(0, mask_rows, counted.long())
    return ranks


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
    return out


@torch.no_grad()
def evaluate_scores(score_fn: Callable[[torch.Tensor, list[np.ndarray]], torch.Tensor], eval_set: EvalSet,
                    mask_history: bool = True, ks: Sequence[int] = KS, batch_size: int = 1024,
                    device: str | torch.device = "cpu") -> EvalResult:
    """Rank every item for every user of eval_set with score_fn(users, histories) -> (B, n_items) scores."""
    ranks = []
    for start in range(0, len(eval_set), batch_size):
        users = eval_set.users[start:start + batch_size]
        histories = eval_set.histories[start:start + batch_size]
        scores = score_fn(torch.tensor(users, dtype=torch.long, device=device), histories)
        targets = torch.tensor(eval_set.targets[start:start + batch_size], dtype=torch.long, device=scores.device)
        mask_rows = mask_cols = None
        if mask_history:
            lengths = np.array([len(h) for h in histories])
            mask_rows = torch.from_numpy(np.repeat(np.arange(len(histories)), lengths)).to(scores.device)
            mask_cols = torch.from_numpy(np.concatenate(histories).astype(np.int64) if lengths.sum()
                                         else np.zeros(0, np.int64)).to(scores.device)
        ranks.append(target_ranks(scores, targets, mask_rows, mask_cols).cpu().numpy())
    ranks_all = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    return EvalResult(metrics_from_ranks(ranks_all, ks), ranks_all, eval_set.users, eval_set.targets, mask_history)


def evaluate(model, eval_set: EvalSet, mask_history: bool = True, ks: Sequence[int] = KS,
             batch_size: int = 1024) -> EvalResult:
    """Evaluate a `Recommender` (in eval mode, on its own device); its `evaluation_report()` then covers this
    ranking alone."""
    was_training = model.training
    model.eval()
    model.start_evaluation()
    try:
        return evaluate_scores(model.score, eval_set, mask_history, ks, batch_size, model.device)
    finally:
        model.train(was_training)
