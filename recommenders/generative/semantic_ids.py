"""Semantic IDs from the item store, aligned to a dataset's item index, and new items for a trained model.

`load_semantic_ids(store, "semantic_id", item_ids)` returns an (n_items, L) int64 matrix, L the longest ID,
with -1 after each ID's last code and a row of -1 for items without an ID (they cannot be generated and
are counted). `add_new_items(model, store, column, item_ids)` hands a trained generative model the items
that received IDs after training (`seerec quantize --assign-only`) and returns their ids, in the order of
their new indexes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline.schema import KEY
from recommenders.data import RecommenderError

log = logging.getLogger("seerec.recommenders")


def with_codebook_size(config, features):
    """`config` with `codebook_size` read from the IDs when it is unset; a model saves it resolved, so that a
    checkpoint is rebuilt without the IDs (from placeholder inputs)."""
    if features is None or config.codebook_size is not None:
        return config
    return config.model_copy(update={"codebook_size": int(np.asarray(features).max(initial=0)) + 1})


def _read(store, column: str) -> tuple[list[str], list[list[int]]]:
    if not store.exists():
        raise RecommenderError(f"the store at {store.cfg.uri} has no item table, so semantic IDs cannot be read; "
                               "run `seerec ingest`, `seerec embed` and `seerec quantize` first")
    field = store.schema.field(column) if column in store.schema.names else None
    if field is None:
        raise RecommenderError(f"the store has no semantic-ID column {column!r}; run `seerec quantize` first (or "
                               "set train.tiger.semantic_id_column)")
    if not (pa.types.is_list(field.type) and pa.types.is_integer(field.type.value_type)):
        raise RecommenderError(f"store column {column!r} is not a semantic-ID column (it holds {field.type})")
    table = store.scan([KEY, column], f"`{column}` IS NOT NULL")
    return table[KEY].to_pylist(), table[column].to_pylist()


def load_semantic_ids(store, column: str, item_ids: Sequence[str]) -> tuple[np.ndarray, dict]:
    keys, ids = _read(store, column)
    index = {item: i for i, item in enumerate(item_ids)}
    pairs = [(index[k], v) for k, v in zip(keys, ids, strict=True) if k in index and v]
    if not pairs:
        raise RecommenderError(f"no item of this dataset has a value in store column {column!r}; run "
                               "`seerec quantize` first")
    width = max(len(v) for _, v in pairs)
    codes = np.full((len(item_ids), width), -1, dtype=np.int64)
    for row, semantic_id in pairs:
        codes[row, :len(semantic_id)] = semantic_id
    lengths = sorted({len(v) for _, v in pairs})
    report = {"semantic_id_column": column, "levels": width, "id_lengths": lengths,
              "items_without_semantic_id": len(item_ids) - len(pairs),
              "distinct_ids": len({tuple(v) for _, v in pairs})}
    if report["items_without_semantic_id"]:
        log.warning("%d of %d items have no semantic ID in %s; they can never be recommended",
                    report["items_without_semantic_id"], len(item_ids), column)
    if report["distinct_ids"] < len(pairs):
        log.warning("%d items share a semantic ID with another item; only one of each group can be generated",
                    len(pairs) - report["distinct_ids"])
    return codes, report


def add_new_items(model, store, column: str, item_ids: Sequence[str]) -> list[str]:
    """Give `model` every store item with a semantic ID that is not in `item_ids` (the trained catalog)."""
    known = set(item_ids)
    new = [(k, v) for k, v in zip(*_read(store, column), strict=True) if k not in known and v]
    if new:
        model.add_items([v for _, v in new])
        log.info("added %d new items to the generative model's trie (now %d items)", len(new), model.n_items)
    return [k for k, _ in new]
