"""Recommend from a trained run (`seerec recommend`, `python -m jobs.recommend`, `seerec submit recommend`).

    seerec recommend runs/sasrec-beauty --user 9 -k 10
    seerec recommend runs/sasrec-beauty --history 4,22,63 --json
    seerec recommend runs/sasrec-beauty --all --out recs.parquet
    python -m jobs.recommend recommend.run_dir=runs/sasrec-beauty recommend.out=recs.parquet

The batch (`--all`, and the job) is a Ray Data job: the user indexes are mapped by an actor pool whose actors
each hold the model (`recommenders.serve.BatchRecommender`, given the run folder's files, so they load it on
any node), and the rows stream back to the driver, which writes them: Parquet to a temporary file renamed
into place at the end, LanceDB as one overwrite commit at the end. Either way a killed job leaves the previous
output (or none), never a partial one passed off as complete.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.config import ConfigError, RecommendConfig, SeerecConfig
from pipeline.runtime import init_ray, pool_options
from recommenders.runs import load_serving
from recommenders.serve import OUTPUT_SCHEMA, BatchRecommender, run_files

log = logging.getLogger("seerec.recommend")


@dataclass
class RecommendSummary:
    users: int
    rows: int
    noted_users: int
    seconds: float
    out: str

    def log(self) -> None:
        log.info("recommended for %d users (%d rows, %d users with a note instead) in %.1fs (%.0f users/s) -> %s",
                 self.users, self.rows, self.noted_users, self.seconds, self.users / max(self.seconds, 1e-9),
                 self.out)


def run_recommend(cfg: SeerecConfig) -> RecommendSummary:
    """Top-k recommendations for every user of the run, written to `recommend.out`."""
    rcfg = cfg.recommend
    if rcfg.run_dir is None:
        raise ConfigError("name the run folder to recommend from: recommend.run_dir=runs/<name>")
    if rcfg.out is None:
        raise ConfigError("name where the recommendations go: recommend.out=recs.parquet (or a LanceDB folder, or "
                          "store)")
    data = load_serving(rcfg.run_dir)  # an unusable run folder is one sentence, before Ray starts
    started = time.perf_counter()
    batches = recommend_batches(cfg, len(data.user_ids), run_files(rcfg.run_dir))
    if rcfg.out.endswith(".parquet"):
        rows, noted = write_parquet(batches, Path(rcfg.out), len(data.user_ids))
        where = rcfg.out
    else:
        store_cfg = data.config.store if rcfg.out == "store" else cfg.store.model_copy(update={"uri": rcfg.out})
        rows, noted = write_lance(batches, store_cfg, rcfg.table, len(data.user_ids))
        where = f"{store_cfg.uri} (table {rcfg.table})"
    summary = RecommendSummary(len(data.user_ids), rows, noted, round(time.perf_counter() - started, 2), where)
    summary.log()
    return summary


def recommend_batches(cfg: SeerecConfig, n_users: int, files: dict[str, bytes]):
    """The Ray Data job: user indexes -> actor pool of models -> OUTPUT_SCHEMA batches, streamed back."""
    import ray

    rcfg: RecommendConfig = cfg.recommend
    init_ray(cfg.ray)
    blocks = max(1, -(-n_users // rcfg.batch_size))  # one block per model call
    users = ray.data.range(n_users, override_num_blocks=blocks)
    device = rcfg.device if rcfg.device != "auto" else ("cuda" if rcfg.num_gpus else "cpu")
    recommended = users.map_batches(
        BatchRecommender, batch_format="pyarrow", batch_size=rcfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=rcfg.actors), num_gpus=rcfg.num_gpus or None, **pool_options(cfg.ray),
        fn_constructor_kwargs={"files": files, "name": Path(rcfg.run_dir).resolve().name, "k": rcfg.k,
                               "exclude_seen": rcfg.exclude_seen, "device": device,
                               "cpu_threads": rcfg.cpu_threads})
    return recommended.iter_batches(batch_format="pyarrow", batch_size=None)


class _Progress:
    """Counts rows, noted users and users done over the streamed batches, with a progress bar."""

    def __init__(self, n_users: int):
        self.rows = self.noted = 0
        # Outside a terminal a redrawn bar would run into the log lines; the summary says what was done.
        self.bar = tqdm(total=n_users, desc="recommend", unit="user", disable=not sys.stderr.isatty())

    def batches(self, batches):
        for batch in batches:
            table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            table = table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
            notes = table["note"]
            self.rows += table.num_rows - (len(notes) - notes.null_count)
            self.noted += len(notes) - notes.null_count
            self.bar.update(len(set(table["user_id"].to_pylist())))
            yield from table.to_batches()
        self.bar.close()


def write_parquet(batches, out: Path, n_users: int) -> tuple[int, int]:
    """Stream the batches into a temporary file beside `out`, renamed onto `out` only when all are in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    progress = _Progress(n_users)
    try:
        with pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
            for batch in progress.batches(batches):
                writer.write_batch(batch)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return progress.rows, progress.noted


def write_lance(batches, store_cfg, table: str, n_users: int) -> tuple[int, int]:
    """Write the batches as LanceDB table `table` in one overwrite commit, made once every batch is in."""
    from pipeline.store import ItemStore

    progress = _Progress(n_users)
    reader = pa.RecordBatchReader.from_batches(OUTPUT_SCHEMA, progress.batches(batches))
    ItemStore(store_cfg).db.create_table(table, data=reader, schema=OUTPUT_SCHEMA, mode="overwrite")
    return progress.rows, progress.noted


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_recommend, "Write top-k recommendations for every user of a trained run.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
