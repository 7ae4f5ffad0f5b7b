"""Full-ranking evaluation against hand-computed cases: masking, pessimistic ties, one-item users, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from recommenders.data import EvalSet, RecommenderError
from recommenders.evaluate import evaluate_scores, metrics_from_ranks, pad_histories, target_ranks


def fixed(scores):
    table = torch.tensor(scores, dtype=torch.float32)
    return lambda users, histories: table[users]


def eval_set(targets, histories):
    return EvalSet(np.arange(len(targets)), np.array(targets), [np.array(h, dtype=np.int64) for h in histories])


def test_rank_counts_greater_scores_and_masks_history():
    scores = fixed([[0.1, 0.9, 0.5, 0.3]])
    unmasked = evaluate_scores(scores, eval_set([2], [[1]]), mask_history=False)
    masked = evaluate_scores(scores, eval_set([2], [[1]]), mask_history=True)
    assert unmasked.ranks.tolist() == [1] and masked.ranks.tolist() == [0]
    assert unmasked.metrics["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert masked.metrics["ndcg@5"] == pytest.approx(1.0)
    assert unmasked.metrics["recall@5"] == masked.metrics["recall@5"] == 1.0
    assert not unmasked.mask_history and masked.mask_history


def test_ties_are_pessimistic():
    # Items 0, 1, 2 tie: the target is placed after the other two, whatever its index.
    scores = fixed([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    result = evaluate_scores(scores, eval_set([0, 2, 1], [[3], [3], [3]]), mask_history=False)
    assert result.ranks.tolist() == [2, 2, 3]  # a constant scorer ranks its target last
    # A masked item that ties with the target does not count.
    masked = evaluate_scores(fixed([[1.0, 1.0, 1.0, 0.0]]), eval_set([0], [[1]]), mask_history=True)
    assert masked.ranks.tolist() == [1]


def test_user_with_one_item_and_target_never_masked():
    # One history item (item 0), which is also the target: the target is never masked away.
    result = evaluate_scores(fixed([[0.9, 0.1, 0.2]]), eval_set([0], [[0]]), mask_history=True)
    assert result.ranks.tolist() == [0]
    single = evaluate_scores(fixed([[0.3, 0.1, 0.2, 0.5]]), eval_set([2], [[3]]), mask_history=True)
    assert single.ranks.tolist() == [1]  # item 3 masked, item 0 still above
    assert single.metrics == pytest.approx({"recall@5": 1, "ndcg@5": 1 / math.log2(3), "recall@10": 1,
                                            "ndcg@10": 1 / math.log2(3), "recall@20": 1, "ndcg@20": 1 / math.log2(3)})


def test_metrics_cut_at_k_and_average_over_users():
    ranks = np.array([0, 4, 5, 9, 10, 19, 20])
    m = metrics_from_ranks(ranks)
    assert m["recall@5"] == pytest.approx(2 / 7)
    assert m["recall@10"] == pytest.approx(4 / 7)
    assert m["recall@20"] == pytest.approx(6 / 7)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 7)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(7) + 1 / math.log2(11)) / 7)


def test_batches_give_the_same_per_user_results():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, (37, 50)).astype(np.float32)  # many ties
    histories = [rng.choice(50, rng.integers(1, 6), replace=False) for _ in range(37)]
    data = eval_set(rng.integers(0, 50, 37).tolist(), histories)
    one = evaluate_scores(fixed(scores), data, batch_size=1)
    many = evaluate_scores(fixed(scores), data, batch_size=16)
    assert one.ranks.tolist() == many.ranks.tolist()
    # Against a plain Python count of the same definition.
    for u in range(37):
        s = scores[u].copy()
        t = data.targets[u]
        others = [i for i in range(50) if i != t and i not in set(histories[u].tolist())]
        assert one.ranks[u] == sum(s[i] >= s[t] for i in others)
    per_user = one.per_user()
    assert per_user["ndcg@10"].mean() == pytest.approx(one.metrics["ndcg@10"])


def test_nan_scores_are_refused():
    with pytest.raises(RecommenderError, match="NaN"):
        target_ranks(torch.tensor([[float("nan"), 1.0]]), torch.tensor([1]))


def test_pad_histories_left_pads_and_truncates():
    padded = pad_histories([np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)], max_len=2)
    assert padded.tolist() == [[2, 3], [-1, 4], [-1, -1]]


def test_beauty_sized_full_ranking_takes_seconds():
    users, items = 22_363, 12_101
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, items, 8) for _ in range(users)]
    data = EvalSet(np.arange(users), rng.integers(0, items, users), histories)
    item_vectors = torch.randn(items, 64)
    user_vectors = torch.randn(users, 64)
    started = time.perf_counter()
    result = evaluate_scores(lambda u, h: user_vectors[u] @ item_vectors.T, data, batch_size=2048)
    seconds = time.perf_counter() - started
    assert len(result.ranks) == users
    assert 0.0 < result.metrics["recall@20"] < 0.01  # random scores: about 20 / 12101
    assert seconds < 60, f"full ranking took {seconds:.1f}s"
