"""Plain k-means in numpy: k-means++ seeding, Lloyd iterations with a fixed cap, empty clusters re-seeded.

Shared by residual k-means (every level) and the RQ-VAE (codebook initialisation). Distances are computed
as ||x||² - 2 x·c + ||c||² with one matrix product per chunk, so a 12k × 384 × 256 level takes well under
a second per iteration on two cores.
"""

from __future__ import annotations

import numpy as np

CHUNK = 16_384


def sq_distances(X: np.ndarray, C: np.ndarray, x_sq: np.ndarray | None = None) -> np.ndarray:
    """(N, K) squared Euclidean distances, clipped at 0."""
    x_sq = (X * X).sum(1) if x_sq is None else x_sq
    d = x_sq[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def assign(X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and its squared distance for every row, in chunks to bound memory."""
    labels = np.empty(len(X), np.int64)
    dist = np.empty(len(X), np.float32)
    for start in range(0, len(X), CHUNK):
        d = sq_distances(X[start:start + CHUNK], C)
        labels[start:start + CHUNK] = d.argmin(1)
        dist[start:start + CHUNK] = d[np.arange(len(d)), labels[start:start + CHUNK]]
    return labels, dist


def kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (as scikit-learn): each step draws 2 + log k candidates ∝ squared distance to
    the nearest centre and keeps the one that lowers the total most."""
    n = len(X)
    trials = 2 + int(np.log(k))
    x_sq = (X * X).sum(1)
    centres = np.empty((k, X.shape[1]), np.float32)
    centres[0] = X[rng.integers(n)]
    closest = sq_distances(X, centres[:1], x_sq)[:, 0]
    for j in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct points than k: repeat existing ones (callers reduce k before this)
            centres[j] = X[rng.integers(n)]
            continue
        picks = np.searchsorted(np.cumsum(closest, dtype=np.float64), rng.random(trials) * total)
        picks = np.minimum(picks, n - 1)
        candidate = np.minimum(closest[:, None], sq_distances(X, X[picks], x_sq))
        best = int(candidate.sum(0).argmin())
        centres[j], closest = X[picks[best]], candidate[:, best]
    return centres


def kmeans(X: np.ndarray, k: int, seed: int = 0, max_iter: int = 50,
           tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Centres (k, D) and labels (N,). Empty clusters take the points farthest from their centre."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    centres = kmeans_pp(X, k, rng)
    previous = np.inf
    labels = np.zeros(len(X), np.int64)
    for _ in range(max_iter):
        labels, dist = assign(X, centres)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres, dtype=np.float64)
        np.add.at(sums, labels, X)
        filled = counts > 0
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if len(empty):
            # Re-seed empty codes with the worst-served points, so no code stays dead.
            far = np.argsort(-dist)[: len(empty)]
            centres[empty[: len(far)]] = X[far]
        inertia = float(dist.sum())
        if not len(empty) and previous - inertia <= tol * max(previous, 1e-12):
            break
        previous = inertia
    labels, _ = assign(X, centres)
    return centres, labels
