"""Trained item embeddings into the item store (`train.export_column`), as a vector column family.

The run id is the family's `_model` provenance and `<model>:<features>` its `_source`, so a later stage
(quantize, search, a content model) reading the column can tell which training run made it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.schema import KEY, vector_family
from recommenders.base import Recommender
from recommenders.data import RecommenderError

if TYPE_CHECKING:  # LanceDB is imported only where a store is used
    from pipeline.store import ItemStore

log = logging.getLogger("seerec.train")


def export_item_embeddings(store: ItemStore, column: str, model: Recommender, item_ids, run_id: str,
                           source: str) -> int:
    """Write one vector per item into `column` (+ `_model` = run id, `_source`, `_at`, `_error`)."""
    vectors = model.item_embeddings()
    if vectors is None:
        raise RecommenderError(f"model {model.name} has no item embeddings to export; unset train.export_column")
    if not store.exists():
        raise RecommenderError(f"cannot export to {column!r}: the store at {store.cfg.uri} has no item table")
    vectors = vectors.detach().float().cpu().numpy()
    family = vector_family(column, vectors.shape[1])
    n = len(item_ids)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    table = pa.table({
        KEY: pa.array([str(i) for i in item_ids], pa.string()),
        column: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        family.model_column: pa.array([run_id] * n, pa.string()),
        family.time_column: pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        family.error_column: pa.nulls(n, pa.string()),
        f"{column}_source": pa.array([source] * n, pa.string()),
    })
    written = 0
    for start in range(0, n, store.cfg.write_batch_rows):
        result = store.write_family(family, table.slice(start, store.cfg.write_batch_rows))
        written += result.updated
    log.info("exported %d item embeddings (%d dimensions) to store column %s as %s", written, vectors.shape[1],
             column, run_id)
    return written
