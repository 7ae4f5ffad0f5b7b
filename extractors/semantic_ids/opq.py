"""Optimized product quantization (OPQ): long semantic IDs whose digits are independent of each other.

The vector is rotated by a learned orthogonal matrix R and cut into `levels` consecutive sub-vectors; each
sub-vector gets its own k-means codebook of `codebook_size` codes, so an ID has `levels` digits with no order
among them (unlike residual k-means, where each level refines the one before). Many short sub-vectors give
long IDs (16-64 digits) that are almost never shared, which is what a parallel-digit recommender needs.

Plain PQ cuts the raw dimensions; when a few directions carry most of the variance, some sub-spaces hold
nearly all of it and others nothing. OPQ alternates (`opq_iters` rounds): fit the sub-space codebooks on X R,
then set R to the rotation that best maps X onto the reconstruction (orthogonal Procrustes: U Vᵀ from the SVD
of Xᵀ X̂), which spreads the variance so every digit carries information. `opq_iters=0` is plain PQ. The
codebooks of each round warm-start the next. Sub-spaces take `np.array_split` of the dimensions, so the
dimension need not be a multiple of `levels`.
"""

from __future__ import annotations

import numpy as np

from extractors.semantic_ids.base import QuantizeError, Tokenizer, log, n_distinct
from extractors.semantic_ids.kmeans import assign, kmeans, sq_distances


class OptimizedPQ(Tokenizer):
    kind = "opq"

    def __init__(self, levels: int = 32, codebook_size: int = 256, preprocess: str = "l2", columns=(),
                 seed: int = 0, max_iter: int = 25, opq_iters: int = 8):
        super().__init__(levels, codebook_size, preprocess, columns, seed)
        if opq_iters < 0:
            raise QuantizeError(f"opq_iters must be 0 (plain PQ) or more, got {opq_iters}")
        self.max_iter, self.opq_iters = max_iter, opq_iters
        self.rotation: np.ndarray | None = None
        self.codebooks: list[np.ndarray] = []

    def params(self) -> dict:
        return {"max_iter": self.max_iter, "opq_iters": self.opq_iters}

    @property
    def level_sizes(self) -> list[int]:
        return [len(c) for c in self.codebooks] if self.codebooks else super().level_sizes

    def _slices(self, dim: int) -> list[slice]:
        bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(dim), self.levels)])
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _fit(self, Z: np.ndarray) -> None:
        if Z.shape[1] < self.levels:
            raise QuantizeError(f"OPQ cuts vectors into {self.levels} sub-vectors, but they have only {Z.shape[1]} "
                                "dimensions; use fewer levels")
        self.rotation = np.eye(Z.shape[1], dtype=np.float32)
        self.codebooks = []
        for round_ in range(self.opq_iters + 1):
            Y = Z @ self.rotation
            books = []
            for m, part in enumerate(self._slices(Z.shape[1])):
                sub = np.ascontiguousarray(Y[:, part])
                warm = self.codebooks[m] if self.codebooks else None
                k = len(warm) if warm is not None else min(self.codebook_size, n_distinct(sub))
                if warm is None and k < self.codebook_size:
                    log.warning("sub-space %d: only %d distinct sub-vectors for %d codes; using %d codes there",
                                m, k, self.codebook_size, k)
                centres, _ = kmeans(sub, k, seed=self.seed + m, max_iter=self.max_iter, init=warm)
                books.append(centres)
            self.codebooks = books
            if round_ < self.opq_iters:  # Procrustes: the rotation taking X closest to its reconstruction
                u, _, vt = np.linalg.svd(Z.T @ self._reconstruct(self._assign(Y)), full_matrices=False)
                self.rotation = (u @ vt).astype(np.float32)

    def _assign(self, Y: np.ndarray) -> np.ndarray:
        codes = np.zeros((len(Y), self.levels), np.int64)
        for m, part in enumerate(self._slices(Y.shape[1])):
            codes[:, m], _ = assign(np.ascontiguousarray(Y[:, part]), self.codebooks[m])
        return codes

    def _reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """The rotated-space reconstruction X̂ R of codes."""
        return np.concatenate([book[codes[:, m]] for m, book in enumerate(self.codebooks)], axis=1)

    def _encode(self, Z: np.ndarray) -> np.ndarray:
        return self._assign(Z @ self.rotation)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self._reconstruct(codes) @ self.rotation.T

    def _last_level_distances(self, Z: np.ndarray) -> np.ndarray:
        last = self._slices(Z.shape[1])[-1]
        return sq_distances(np.ascontiguousarray((Z @ self.rotation)[:, last]), self.codebooks[-1])

    def tensors(self) -> dict[str, np.ndarray]:
        return {"rotation": self.rotation, **{f"codebook.{i}": c for i, c in enumerate(self.codebooks)}}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.rotation = tensors["rotation"]
        self.codebooks = [tensors[f"codebook.{i}"] for i in range(self.levels)]
