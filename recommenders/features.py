"""Item features straight from the LanceDB item store, aligned to a dataset's item index.

`load_item_features(store, ["text_vec", "clip_vec"], item_ids)` returns an (n_items, D) float32 matrix,
the named vector columns concatenated in order. Items without a vector (not in the store, or a null
value) get a zero row, and their count is reported. A missing column, a column that is not a vector, an
unexpected width, or a column with no vector at all stops with one sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline.schema import KEY, is_vector_field
from pipeline.store import ItemStore
from recommenders.data import RecommenderError

log = logging.getLogger("seerec.recommenders")


def load_item_features(store: ItemStore, columns: Sequence[str], item_ids: Sequence[str],
                       expected_dim: int | None = None) -> tuple[np.ndarray, dict]:
    if not columns:
        raise RecommenderError("this model needs item features; name store vector columns in train.features")
    if not store.exists():
        raise RecommenderError(f"the store at {store.cfg.uri} has no item table, so features "
                               f"{', '.join(columns)} cannot be read; run `seerec ingest` and `seerec embed` first")
    schema = store.schema
    for column in columns:
        if column not in schema.names:
            vectors = [f.name for f in schema if is_vector_field(f)]
            raise RecommenderError(f"the store has no feature column {column!r}; its vector columns are: "
                                   f"{', '.join(vectors) or 'none'}")
        if not is_vector_field(schema.field(column)):
            raise RecommenderError(f"store column {column!r} is not a vector column (it holds "
                                   f"{schema.field(column).type})")
    table = store.scan([KEY, *columns])
    index = {item: i for i, item in enumerate(item_ids)}
    rows = np.array([index.get(k, -1) for k in table[KEY].to_pylist()], dtype=np.int64)
    blocks, report = [], {"columns": list(columns)}
    present = np.ones(len(item_ids), dtype=bool)
    for column in columns:
        array = table[column].combine_chunks()
        dim = array.type.list_size
        block = np.zeros((len(item_ids), dim), dtype=np.float32)
        valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool) & (rows >= 0)
        if not valid.any():
            raise RecommenderError(f"no item of this dataset has a value in store column {column!r}; "
                                   "run `seerec embed` first")
        values = _dense(array, dim)
        block[rows[valid]] = values[valid]
        has = np.zeros(len(item_ids), dtype=bool)
        has[rows[valid]] = True
        present &= has
        blocks.append(block)
        report[f"{column}_dim"] = dim
    features = np.concatenate(blocks, axis=1)
    if expected_dim is not None and features.shape[1] != expected_dim:
        raise RecommenderError(f"features {'+'.join(columns)} have {features.shape[1]} dimensions but the model "
                               f"expects {expected_dim}")
    if not np.isfinite(features).all():
        raise RecommenderError(f"features {'+'.join(columns)} hold NaN or infinite values")
    report["items_without_features"] = int((~present).sum())
    if report["items_without_features"]:
        log.warning("%d of %d items have no value in %s; they get zero features", report["items_without_features"],
                    len(item_ids), "+".join(columns))
    return features, report


def _dense(array: pa.FixedSizeListArray, dim: int) -> np.ndarray:
    """(n, dim) float32 with zeros for null rows (a null list has no values of its own to read)."""
    filled = array.fill_null(pa.scalar([0.0] * dim, array.type)) if array.null_count else array
    return filled.flatten().to_numpy(zero_copy_only=False).reshape(len(array), dim).astype(np.float32)
