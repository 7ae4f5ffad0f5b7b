"""Residual k-means: level l clusters what levels 0..l-1 left unexplained, K codes per level.

Balanced levels (default): every level after the first is refined with `balanced_kmeans`, so items spread
evenly over its codes instead of piling onto the few codes that sit near the middle of the leftovers (plain
k-means on Amazon Scientific residuals uses 256 codes at level 2 but with a perplexity of 12). Each code keeps
an offset, and encoding picks the code minimising squared distance minus offset, for new items too. Shares
count distinct vectors, since identical items cannot be told apart by any code. The first level stays plain
k-means: it clusters the catalogue's real topics, and forcing equal topic sizes costs more (on Amazon Beauty,
whose 12k items have only 3k distinct texts, it raised collisions). `balance` sets the strength: 1 asks for
equal shares, 0 gives plain k-means at every level.

Optional residual normalisation clusters each residual's *direction*: the residual is scaled to unit
length before the nearest code is chosen, the next residual subtracts the code times the residual's norm,
and decoding uses each code's mean residual norm (stored). This keeps later levels, whose residuals are
small, from being dominated by the few items with large leftovers.

Fallback: when a level's residuals hold fewer distinct vectors than K (e.g. fewer items than codes), that
level uses only as many codes as there are distinct vectors, and a warning is logged.
"""

from __future__ import annotations

import numpy as np

from extractors.semantic_ids.base import QuantizeError, Tokenizer, distinct_weights, log, n_distinct
from extractors.semantic_ids.kmeans import assign, balanced_kmeans, kmeans, sq_distances


class ResidualKMeans(Tokenizer):
    kind = "rkmeans"

    def __init__(self, levels: int = 3, codebook_size: int = 256, preprocess: str = "l2", columns=(), seed: int = 0,
                 max_iter: int = 50, normalize_residuals: bool = False, balance: float = 1.0):
        super().__init__(levels, codebook_size, preprocess, columns, seed)
        if not 0 <= balance <= 1:
            raise QuantizeError(f"balance must lie in [0, 1], got {balance}")
        self.max_iter, self.normalize_residuals, self.balance = max_iter, normalize_residuals, balance
        self.codebooks: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []  # per code, subtracted from squared distances when assigning
        self.norms: list[np.ndarray] = []  # mean residual norm per code (only with normalize_residuals)

    def params(self) -> dict:
        return {"max_iter": self.max_iter, "normalize_residuals": self.normalize_residuals, "balance": self.balance}

    @property
    def level_sizes(self) -> list[int]:
        return [len(c) for c in self.codebooks] if self.codebooks else super().level_sizes

    def _fit(self, Z: np.ndarray) -> None:
        self.codebooks, self.offsets, self.norms = [], [], []
        weights = distinct_weights(Z)
        residual = Z.copy()
        for level in range(self.levels):
            target, norm = self._unit(residual)
            k = min(self.codebook_size, n_distinct(target))
            if k < self.codebook_size:
                log.warning("level %d: only %d distinct residuals for %d codes; using %d codes at this level",
                            level, k, self.codebook_size, k)
            if k == 1:
                centres, labels = target.mean(0, keepdims=True), np.zeros(len(target), np.int64)
            else:
                centres, labels = kmeans(target, k, seed=self.seed + level, max_iter=self.max_iter)
            offsets = np.zeros(k, np.float32)
            if level > 0 and k > 1 and self.balance > 0:
                centres, offsets = balanced_kmeans(target, centres, weights, self.balance)
                labels, _ = assign(target, centres, offsets)
            self.codebooks.append(centres.astype(np.float32))
            self.offsets.append(offsets)
            if self.normalize_residuals:
                sums = np.bincount(labels, weights=norm[:, 0], minlength=k)
                counts = np.maximum(np.bincount(labels, minlength=k), 1)
                self.norms.append((sums / counts).astype(np.float32))
            residual = residual - centres[labels] * norm

    def _unit(self, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.normalize_residuals:
            return residual, np.ones((len(residual), 1), np.float32)
        norm = np.linalg.norm(residual, axis=1, keepdims=True).astype(np.float32)
        return residual / np.where(norm > 1e-12, norm, 1.0), norm

    def _walk(self, Z: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes of the first `levels` levels and the residual left after them."""
        codes = np.zeros((len(Z), self.levels), np.int64)
        residual = Z.copy()
        for level in range(levels):
            target, norm = self._unit(residual)
            codes[:, level], _ = assign(target, self.codebooks[level], self.offsets[level])
            residual = residual - self.codebooks[level][codes[:, level]] * norm
        return codes, residual

    def _encode(self, Z: np.ndarray) -> np.ndarray:
        return self._walk(Z, self.levels)[0]

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(codes), self.codebooks[0].shape[1]), np.float32)
        for level, book in enumerate(self.codebooks):
            part = book[codes[:, level]]
            out += part * self.norms[level][codes[:, level], None] if self.normalize_residuals else part
        return out

    def _last_level_distances(self, Z: np.ndarray) -> np.ndarray:
        _, residual = self._walk(Z, self.levels - 1)
        return sq_distances(self._unit(residual)[0], self.codebooks[-1]) - self.offsets[-1]

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"codebook.{i}": c for i, c in enumerate(self.codebooks)}
        if self.balance > 0:  # plain tokenizers keep the arrays, and so the id, they had before offsets existed
            out.update({f"offsets.{i}": g for i, g in enumerate(self.offsets)})
        out.update({f"norms.{i}": n for i, n in enumerate(self.norms)})
        return out

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.codebooks = [tensors[f"codebook.{i}"] for i in range(self.levels)]
        if "offsets.0" not in tensors:  # plain, or saved before balanced levels existed: nearest code wins
            self.balance = 0.0
        self.offsets = [tensors.get(f"offsets.{i}", np.zeros(len(c), np.float32)) for i, c in enumerate(self.codebooks)]
        self.norms = [tensors[f"norms.{i}"] for i in range(self.levels)] if self.normalize_residuals else []
