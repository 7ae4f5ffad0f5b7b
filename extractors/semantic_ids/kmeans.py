"""Plain k-means in numpy: k-means++ seeding, Lloyd iterations with a fixed cap, empty clusters re-seeded.

Shared by residual k-means (every level) and the RQ-VAE (codebook initialisation). Distances are computed
as ||x||² - 2 x·c + ||c||² with one matrix product per chunk, so a 12k × 384 × 256 level takes well under
a second per iteration on two cores.

Balanced refinement (`balanced_kmeans`) spreads points over the codes: every code j gets an offset g_j and a
point goes to the code minimising ||x - c_j||² - g_j. The offsets are the column potentials of an entropic
optimal transport from the points to equal shares per code (Sinkhorn iterations); `strength` < 1 relaxes the
equal-share constraint into a size penalty, the offsets settling (up to a common constant) at strength /
(1 - strength) · ε · log(share / size). The offsets are part of the model, so new points follow the same rule.
"""

from __future__ import annotations

import numpy as np

CHUNK = 16_384


def sq_distances(X: np.ndarray, C: np.ndarray, x_sq: np.ndarray | None = None) -> np.ndarray:
    """(N, K) squared Euclidean distances, clipped at 0."""
    x_sq = (X * X).sum(1) if x_sq is None else x_sq
    d = x_sq[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def assign(X: np.ndarray, C: np.ndarray, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre minimising squared distance minus its offset (plain nearest centre without offsets) and the
    squared distance to it, for every row, in chunks to bound memory."""
    labels = np.empty(len(X), np.int64)
    dist = np.empty(len(X), np.float32)
    for start in range(0, len(X), CHUNK):
        d = sq_distances(X[start:start + CHUNK], C)
        labels[start:start + CHUNK] = (d if offsets is None else d - offsets).argmin(1)
        dist[start:start + CHUNK] = d[np.arange(len(d)), labels[start:start + CHUNK]]
    return labels, dist


def update_centres(X: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Move every non-empty centre to the mean of its points (in place); returns the mask of empty centres."""
    counts = np.bincount(labels, minlength=len(centres))
    sums = np.zeros_like(centres, dtype=np.float64)
    np.add.at(sums, labels, X)
    filled = counts > 0
    centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return ~filled


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


def kmeans(X: np.ndarray, k: int, seed: int = 0, max_iter: int = 50, tol: float = 1e-5,
           init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centres (k, D) and labels (N,). Empty clusters take the points farthest from their centre. `init`
    (k, D) starts from given centres instead of k-means++ (a warm start when the points moved only a little)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    centres = kmeans_pp(X, k, rng) if init is None else np.array(init, dtype=np.float32)
    previous = np.inf
    labels = np.zeros(len(X), np.int64)
    for _ in range(max_iter):
        labels, dist = assign(X, centres)
        empty = np.flatnonzero(update_centres(X, labels, centres))
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


def balance_offsets(d: np.ndarray, weights: np.ndarray, offsets: np.ndarray, eps: float, strength: float,
                    iters: int) -> np.ndarray:
    """`iters` Sinkhorn updates of the per-code offsets (warm-started from `offsets`) so that the soft
    assignment exp((g_j - d_ij) / eps), each row scaled to its weight, gives every code an equal share."""
    log_share = np.float32(np.log(weights.sum() / d.shape[1]))
    g = offsets.astype(np.float32)
    for _ in range(iters):
        p = (g[None, :] - d) / eps
        p -= p.max(1, keepdims=True)
        np.exp(p, out=p)
        p *= (weights / p.sum(1))[:, None]
        g = strength * (g + eps * (log_share - np.log(np.maximum(p.sum(0), 1e-30))))
        g -= g.max()  # only differences between offsets matter
    return g


def balanced_kmeans(X: np.ndarray, centres: np.ndarray, weights: np.ndarray, strength: float, steps: int = 10,
                    eps_frac: float = 0.02, iters: int = 3, settle: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Refine k-means centres under the balanced assignment; returns (centres, offsets). The temperature is
    `eps_frac` of the mean squared distance; offsets get `settle` updates at both ends and `iters` per step."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    centres = centres.astype(np.float32)
    d = sq_distances(X, centres)
    eps = float(eps_frac * d.mean())
    offsets = balance_offsets(d, weights, np.zeros(len(centres), np.float32), eps, strength, settle)
    for _ in range(steps):
        update_centres(X, (d - offsets).argmin(1), centres)
        d = sq_distances(X, centres)
        offsets = balance_offsets(d, weights, offsets, eps, strength, iters)
    return centres, balance_offsets(d, weights, offsets, eps, strength, settle)
