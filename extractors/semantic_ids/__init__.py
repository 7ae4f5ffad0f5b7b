"""Semantic IDs: tokenizers that turn item vectors into short tuples of codes, made unique.

`make_tokenizer("rkmeans" | "rqvae" | "opq", ...)`, `Tokenizer.load(dir)`, `resolve(codes, method)` for collisions
and `diagnose`/`write_diagnostics` for the report of a fit. torch is imported only when an RQ-VAE is used.
"""

import importlib

from extractors.semantic_ids.base import QuantizeError, Tokenizer, concat_columns
from extractors.semantic_ids.collisions import METHODS, collision_stats, resolve
from extractors.semantic_ids.diagnostics import diagnose, summary_line, write_diagnostics

KINDS = ("rkmeans", "rqvae", "opq")


def make_tokenizer(kind: str, **params) -> Tokenizer:
    if kind not in KINDS:
        raise QuantizeError(f"tokenizer must be one of {', '.join(KINDS)}, not {kind!r}")
    importlib.import_module(f"extractors.semantic_ids.{kind}")
    return Tokenizer.registry[kind](**params)


__all__ = ["KINDS", "METHODS", "QuantizeError", "Tokenizer", "collision_stats", "concat_columns", "diagnose",
           "make_tokenizer", "resolve", "summary_line", "write_diagnostics"]
