"""Load a catalog into the item store (`seerec ingest`, `python -m jobs.ingest`)."""

from __future__ import annotations

import logging
import sys
import time

from pipeline.catalogs import CatalogError, read_catalog
from pipeline.config import SeerecConfig
from pipeline.runtime import StageSummary
from pipeline.store import ItemStore

log = logging.getLogger("seerec.ingest")


def run_ingest(cfg: SeerecConfig) -> StageSummary:
    if not cfg.ingest.path:
        raise CatalogError("ingest.path is not set; pass ingest.path=... (a manifest file or a dataset folder)")
    started = time.perf_counter()
    catalog = read_catalog(cfg.ingest.source, cfg.ingest.path, cfg.ingest.limit, cfg.media.roots,
                           cfg.store.storage_options)
    store = ItemStore(cfg.store)
    store.create_if_missing()
    # One commit for the whole catalog (already in memory): each merge scans the table's keys, so commits of
    # `store.write_batch_rows` rows would read a growing table once per batch. A kill leaves nothing half done.
    result = store.upsert(catalog.rows)
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
    store.tag_version("ingest", catalog.source, seconds=summary.seconds)
    summary.log()
    return summary


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_ingest, "Load a catalog into the seerec item store.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
