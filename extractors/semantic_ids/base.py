"""The tokenizer interface shared by every semantic-ID method, plus input preprocessing and save/load.

A tokenizer maps item vectors (N, D) to integer codes (N, L), one code per level, and back to an
approximate vector. Inputs are checked first (finite, 2-D, not all identical) and preprocessed
(`none`, `l2`: unit length per row, `standardize`: zero mean and unit variance per dimension, both
learned at fit time and stored with the tokenizer). `decode` returns an approximation of the
*preprocessed* vector, and reconstruction errors are measured in that space.

Tokenizers are saved as `tokenizer.json` (kind, settings, preprocessing) plus `tokenizer.safetensors`
(all arrays). Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from pipeline.errors import SeerecError

log = logging.getLogger("seerec.semantic_ids")

PREPROCESS = ("none", "l2", "standardize")
CONFIG_FILE = "tokenizer.json"
TENSOR_FILE = "tokenizer.safetensors"


class QuantizeError(SeerecError, ValueError):
    """Input a tokenizer cannot turn into meaningful codes; its message is meant for the user as it is."""


def concat_columns(columns: Sequence[np.ndarray], unit_rows: bool = False) -> np.ndarray:
    """Several (N, D_i) vector columns side by side as one (N, sum D_i) float32 matrix. With `unit_rows`,
    each column's rows are scaled to length 1 first, so that the columns weigh alike: a text embedding and
    a collaborative one (hybrid IDs) have unrelated norms, and the larger would otherwise decide the codes."""
    arrays = [np.asarray(c, dtype=np.float32) for c in columns]
    if not arrays:
        raise QuantizeError("no vector columns to quantize")
    if any(a.ndim != 2 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
        raise QuantizeError("vector columns must be 2-D with the same number of rows")
    if unit_rows:
        arrays = [Preprocessor("l2")(a) for a in arrays]
    return np.ascontiguousarray(np.concatenate(arrays, axis=1))


def check_vectors(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise QuantizeError(f"expected a non-empty 2-D matrix of item vectors, got shape {X.shape}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise QuantizeError(f"{int(bad.sum())} of {len(X)} vectors hold NaN or infinite values "
                            f"(first at row {int(np.flatnonzero(bad)[0])}); drop or repair them first")
    return np.ascontiguousarray(X)


def _row_keys(X: np.ndarray) -> np.ndarray:
    """One opaque value per row, equal exactly when the rows' float bits are equal."""
    X = np.ascontiguousarray(X)
    return X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()


def n_distinct(X: np.ndarray) -> int:
    """How many distinct rows X has (exactly, on the float bits)."""
    return len(np.unique(_row_keys(X)))


def distinct_weights(X: np.ndarray) -> np.ndarray:
    """1 / (copies of the row) per row, so each distinct row weighs 1 in total however often it repeats."""
    _, inverse, counts = np.unique(_row_keys(X), return_inverse=True, return_counts=True)
    return (1.0 / counts[inverse.ravel()]).astype(np.float32)


class Preprocessor:
    """Row L2-normalisation or per-dimension standardisation, learned on the fit data."""

    def __init__(self, mode: str = "none"):
        if mode not in PREPROCESS:
            raise QuantizeError(f"preprocess must be one of {', '.join(PREPROCESS)}, not {mode!r}")
        self.mode = mode
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Preprocessor:
        if self.mode == "standardize":
            self.mean = X.mean(axis=0).astype(np.float32)
            std = X.std(axis=0).astype(np.float32)
            self.std = np.where(std > 1e-12, std, 1.0).astype(np.float32)  # constant dimensions stay as they are
        return self

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self.mode == "l2":
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            return (X / np.where(norms > 1e-12, norms, 1.0)).astype(np.float32)
        if self.mode == "standardize":
            if self.mean is None:
                raise QuantizeError("the standardiser has not been fitted")
            return ((X - self.mean) / self.std).astype(np.float32)
        return X

    def state(self) -> dict[str, np.ndarray]:
        return {"pre.mean": self.mean, "pre.std": self.std} if self.mode == "standardize" else {}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        if self.mode == "standardize":
            self.mean, self.std = tensors["pre.mean"], tensors["pre.std"]


class Tokenizer(ABC):
    """Fit on item vectors, encode them to (N, L) int codes, decode codes to approximate vectors."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init__(self, levels: int = 3, codebook_size: int = 256, preprocess: str = "l2",
                 columns: Sequence[str] = (), seed: int = 0):
        if levels < 1 or codebook_size < 2:
            raise QuantizeError(f"need at least 1 level and 2 codes per level, got {levels} x {codebook_size}")
        if codebook_size > 32767:
            raise QuantizeError("codebook_size must fit in int16 (at most 32767)")
        self.levels, self.codebook_size, self.seed = levels, codebook_size, seed
        self.columns = list(columns)
        self.pre = Preprocessor(preprocess)
        self.dim: int | None = None
        self.fitted = False
        self.fit_seconds = 0.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Tokenizer.registry[cls.kind] = cls

    # ---- public surface ------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, seed: int | None = None) -> Tokenizer:
        import time

        started = time.perf_counter()
        X = check_vectors(X)
        if seed is not None:
            self.seed = seed
        self.dim = X.shape[1]
        Z = self.pre.fit(X)(X)
        distinct = n_distinct(Z)
        if distinct == 1:
            raise QuantizeError(f"all {len(X)} input vectors are identical (after {self.pre.mode} preprocessing); "
                                "semantic IDs would carry no information")
        self._fit(Z)
        self.fitted = True
        self.fit_seconds = time.perf_counter() - started
        return self

    def encode(self, X: np.ndarray) -> np.ndarray:
        return self._encode(self._prepare(X)).astype(np.int16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] < self.levels:
            raise QuantizeError(f"codes must have shape (N, {self.levels}), got {codes.shape}")
        return self._decode(codes[:, : self.levels].astype(np.int64))

    def last_level_distances(self, X: np.ndarray) -> np.ndarray:
        """(N, K_last) cost of giving each item every last-level code, ordered as encoding ranks them (squared
        distance of the last residual, less the code's offset where the method balances codes); for reassignment."""
        return self._last_level_distances(self._prepare(X))

    def preprocessed(self, X: np.ndarray) -> np.ndarray:
        return self._prepare(X)

    @property
    def level_sizes(self) -> list[int]:
        """Codes actually available per level (smaller than codebook_size when a fallback reduced it)."""
        return [self.codebook_size] * self.levels

    @property
    def tokenizer_id(self) -> str:
        digest = hashlib.sha1()
        for name, value in sorted(self.tensors().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return f"{self.kind}-{self.levels}x{self.codebook_size}-{digest.hexdigest()[:12]}"

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in {**self.tensors(), **self.pre.state()}.items()}
        save_file(tensors, str(directory / TENSOR_FILE))
        meta = {"kind": self.kind, "tokenizer_id": self.tokenizer_id, "levels": self.levels,
                "codebook_size": self.codebook_size, "preprocess": self.pre.mode, "columns": self.columns,
                "seed": self.seed, "dim": self.dim, "fit_seconds": self.fit_seconds, "params": self.params(),
                **(extra or {})}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @staticmethod
    def load(directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / TENSOR_FILE).is_file():
            raise QuantizeError(f"no saved tokenizer in {directory} (expected {CONFIG_FILE} and {TENSOR_FILE})")
        rebuild = "re-run `seerec quantize` (without --assign-only) to rebuild it"
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QuantizeError(f"{directory / CONFIG_FILE} is not valid JSON ({exc}); {rebuild}") from None
        if not isinstance(meta, dict):
            raise QuantizeError(f"{directory / CONFIG_FILE} holds no tokenizer settings; {rebuild}")
        if meta.get("kind") in ("rkmeans", "rqvae", "opq"):
            importlib.import_module(f"extractors.semantic_ids.{meta['kind']}")  # registers the class
        cls = Tokenizer.registry.get(meta.get("kind"))
        if cls is None:
            raise QuantizeError(f"{directory / CONFIG_FILE} names an unknown tokenizer kind {meta.get('kind')!r}")
        try:
            tok = cls(levels=meta["levels"], codebook_size=meta["codebook_size"], preprocess=meta["preprocess"],
                      columns=meta["columns"], seed=meta["seed"], **meta["params"])
            tok.dim, tok.fit_seconds = meta["dim"], meta.get("fit_seconds", 0.0)
        except KeyError as exc:
            raise QuantizeError(f"{directory / CONFIG_FILE} lacks the setting {exc}; {rebuild}") from None
        except TypeError as exc:  # an unknown key in params: the constructor names it
            raise QuantizeError(f"{directory / CONFIG_FILE} does not describe a {meta['kind']} tokenizer "
                                f"({exc}); {rebuild}") from None
        try:
            tensors = load_file(str(directory / TENSOR_FILE))
            tok.pre.load_state(tensors)
            tok.load_tensors({k: v for k, v in tensors.items() if not k.startswith("pre.")})
        except (SafetensorError, KeyError, ValueError) as exc:
            raise QuantizeError(f"{directory / TENSOR_FILE} cannot be read as this tokenizer's weights ({exc}); "
                                f"{rebuild}") from None
        tok.fitted = True
        return tok

    @staticmethod
    def saved_meta(directory: str | Path) -> dict[str, Any]:
        path = Path(directory) / CONFIG_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    # ---- what each method implements -------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Method-specific constructor arguments, saved in the JSON."""
        return {}

    @abstractmethod
    def _fit(self, Z: np.ndarray) -> None: ...

    @abstractmethod
    def _encode(self, Z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _decode(self, codes: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _last_level_distances(self, Z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def tensors(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None: ...

    # ---- helpers -----------------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise QuantizeError(f"the {self.kind} tokenizer has not been fitted")

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        self._require_fitted()
        X = check_vectors(X)
        if X.shape[1] != self.dim:
            raise QuantizeError(f"the tokenizer was fitted on {self.dim}-dimensional vectors, got {X.shape[1]}")
        return self.pre(X)
