"""Load a catalog into the item store (`seerec ingest`, `python -m jobs.ingest`)."""

from __future__ import annotations

import logging
import sys
import time

from pipeline.catalogs import CatalogError, read_catalog
from pipeline.config import SeerecConfig
from pipeline.runtime import StageSummary
from pipeline.store import ItemStore, UpsertResult

log = logging.getLogger("seerec.ingest")


def run_ingest(cfg: SeerecConfig) -> StageSummary:
    if not cfg.ingest.path:
        raise CatalogError("ingest.path is not set; pass ingest.path=... (a manifest file or a dataset folder)")
    started = time.perf_counter()
    catalog = read_catalog(cfg.ingest.source, cfg.ingest.path, cfg.ingest.limit)
    store = ItemStore(cfg.store)
    store.create_if_missing()
    result = UpsertResult()
    step = cfg.store.write_batch_rows
    for offset in range(0, catalog.rows.num_rows, step):
        result += store.upsert(catalog.rows.slice(offset, step))
    store.finalize()
    for line in catalog.rejected:
        log.warning("rejected %s", line)
    summary = StageSummary(
        "ingest", catalog.source, total=catalog.rows.num_rows + len(catalog.rejected),
        done=catalog.rows.num_rows - catalog.errors, failed=catalog.errors + len(catalog.rejected),
        seconds=time.perf_counter() - started,
        extra={"inserted": result.inserted, "updated": result.updated, "duplicate_ids": len(catalog.duplicates),
               "rejected_rows": len(catalog.rejected), "store_rows": store.count()},
    )
    summary.log()
    return summary


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_ingest, "Load a catalog into the seerec item store.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
