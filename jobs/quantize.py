"""Turn vector columns into semantic IDs (`seerec quantize`, `python -m jobs.quantize`).

Fit mode: read the configured vector column(s) for every item that has them, fit the tokenizer, encode,
make the IDs unique (`quantize.collisions`) and write the `semantic_id` family (`list<int16>`, with the
tokenizer id in `semantic_id_model`) for all of them. The tokenizer and its diagnostics (JSON + PNG) go to
`quantize.out_dir`. Items whose vector holds NaN get a `semantic_id_error` instead.

`--assign-only`: load the saved tokenizer, encode only the items without an ID, and give them IDs that
avoid every ID already in the store. Existing IDs are never changed. Seeded fits are reproducible.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from extractors.semantic_ids import Tokenizer, concat_columns, diagnose, make_tokenizer, resolve, summary_line
from extractors.semantic_ids import write_diagnostics as write_diag
from pipeline.config import QuantizeConfig, SeerecConfig
from pipeline.runtime import StageSummary
from pipeline.schema import BAD_VECTOR, KEY, Family, semantic_id_family
from pipeline.store import ItemStore, StoreError

log = logging.getLogger("seerec.quantize")


def build_tokenizer(qcfg: QuantizeConfig) -> Tokenizer:
    common = {"levels": qcfg.levels, "codebook_size": qcfg.codebook_size, "preprocess": qcfg.preprocess,
              "columns": qcfg.columns, "seed": qcfg.seed}
    if qcfg.tokenizer == "rkmeans":
        return make_tokenizer("rkmeans", **common, max_iter=qcfg.kmeans_iters,
                              normalize_residuals=qcfg.normalize_residuals, balance=qcfg.balance)
    if qcfg.tokenizer == "opq":
        return make_tokenizer("opq", **common, max_iter=qcfg.kmeans_iters, opq_iters=qcfg.opq_iters)
    return make_tokenizer("rqvae", **common, **qcfg.rqvae.model_dump())


def run_quantize(cfg: SeerecConfig, assign_only: bool = False) -> StageSummary:
    qcfg = cfg.quantize
    store = ItemStore(cfg.store)
    family = semantic_id_family(qcfg.column)
    started = time.perf_counter()
    out_dir = Path(qcfg.out_dir)
    if assign_only:
        tokenizer = Tokenizer.load(out_dir)
        method = Tokenizer.saved_meta(out_dir).get("collisions", qcfg.collisions)
        columns = tokenizer.columns
    else:
        tokenizer, method, columns = build_tokenizer(qcfg), qcfg.collisions, qcfg.columns
    store.require_columns(columns)
    has_vectors = " AND ".join(f"`{c}` IS NOT NULL" for c in columns)
    has_ids = family.name in store.schema.names
    total = store.count(has_vectors)

    taken: list[tuple[int, ...]] = []
    if assign_only and has_ids:
        existing = store.scan([KEY, family.name, family.model_column], f"`{family.name}` IS NOT NULL")
        taken = [tuple(v) for v in existing[family.name].to_pylist()]
        others = set(existing[family.model_column].to_pylist()) - {tokenizer.tokenizer_id}
        if others:
            log.warning("the store holds IDs from other tokenizers too (%s); they are kept and avoided",
                        ", ".join(sorted(map(str, others))))
        where = f"({has_vectors}) AND `{family.name}` IS NULL"
    else:
        where = has_vectors
    rows = store.scan([KEY, *columns], where)
    summary = StageSummary("quantize", "", total=total, skipped=total - rows.num_rows)
    ids_written = np.zeros((0, 0), np.int16)
    if rows.num_rows:
        X = concat_columns([_matrix(rows[c], c) for c in columns], unit_rows=tokenizer.pre.mode == "l2")
        ok = np.isfinite(X).all(axis=1)
        if not assign_only:
            tokenizer.fit(X[ok])
        if ok.any():  # assign-only may find nothing but vectors holding NaN, which only get their error again
            codes = tokenizer.encode(X[ok])
            distances = tokenizer.last_level_distances(X[ok]) if method == "reassign" else None
            ids_written = resolve(codes, method, distances, taken)
        if not assign_only:
            tokenizer.save(out_dir, {"collisions": method})
            diag = diagnose(tokenizer, X[ok], codes, ids_written, method)
            write_diag(diag, out_dir, getattr(tokenizer, "history", None))
            log.info("%s", summary_line(diag))
            summary.extra.update(collision_rate=round(diag["before_dedup"]["collision_rate"], 4),
                                 largest_group=diag["before_dedup"]["largest_group"])
        _write(store, family, rows[KEY], ok, ids_written, tokenizer.tokenizer_id)
        summary.done, summary.failed = int(ok.sum()), int((~ok).sum())
        store.finalize()
    elif not assign_only:
        raise StoreError(f"no item has a value in {', '.join(columns)}; run `seerec embed` first")
    summary.model_id = tokenizer.tokenizer_id
    summary.extra["out_dir"] = str(out_dir)
    summary.seconds = time.perf_counter() - started
    if rows.num_rows:
        store.tag_version("quantize", tokenizer.tokenizer_id, family.name, summary.seconds)
    summary.log()
    return summary


def _matrix(column: pa.ChunkedArray, name: str) -> np.ndarray:
    array = column.combine_chunks()
    if not pa.types.is_fixed_size_list(array.type):
        raise StoreError(f"column {name!r} is not a vector column (it holds {array.type})")
    return array.values.to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size).astype(np.float32)


def _write(store: ItemStore, family: Family, keys: pa.ChunkedArray, ok: np.ndarray, ids: np.ndarray,
           model_id: str) -> None:
    n = len(ok)
    values: list[list[int] | None] = [None] * n
    for row, i in enumerate(np.flatnonzero(ok)):
        values[i] = ids[row].tolist()
    errors = [None if good else BAD_VECTOR for good in ok]
    # One commit: each merge scans the table, so batches of write_batch_rows would scan it once per batch.
    store.write_family(family, family.rows(keys, values, model_id, errors))


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS = {"assign-only": "give IDs to new items with the saved tokenizer; never change existing IDs"}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_quantize, "Turn vector columns of the seerec item store into semantic IDs.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
