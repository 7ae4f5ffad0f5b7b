"""Trained item embeddings into the item store (`train.export_column`), as a vector column family.

The run id is the family's `_model` provenance and `<model>:<features>` its `_source`, so a later stage
(quantize, search, a content model) reading the column can tell which training run made it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline.schema import vector_column, vector_family
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
    keys = pa.array([str(i) for i in item_ids], pa.string())
    rows = family.rows(keys, vector_column(vectors, np.ones(len(vectors), dtype=bool)), run_id,
                       [None] * len(keys), source=source)
    written = store.write_family(family, rows).updated
    store.tag_version("train-export", run_id, column=column)
    log.info("exported %d item embeddings (%d dimensions) to store column %s as %s", written, vectors.shape[1],
             column, run_id)
    return written
