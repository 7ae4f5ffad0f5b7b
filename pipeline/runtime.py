"""What every job shares: joining or starting Ray, bulk writes from the driver, and a summary.

Writes happen on the driver, not in the Ray workers: stage results stream back through
`iter_batches`, are appended to the job's staging table in large batches, and are merged into the item
table once, at the end of the stage. One writer means no commit conflicts within a job, and a kill loses at
most the unflushed rows (`store.write_batch_rows` of them, or `store.flush_interval_s` seconds of work): the
next run adopts the staged batches and redoes only the items never flushed.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow as pa
from tqdm.auto import tqdm

from pipeline.config import RayConfig
from pipeline.schema import Family
from pipeline.store import ItemStore, UpsertResult

log = logging.getLogger("seerec")


def init_ray(cfg: RayConfig) -> None:
    """Join an existing cluster (config address or RAY_ADDRESS, as `ray job submit` sets) or start one."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
    else:
        ray.init(num_cpus=cfg.num_cpus or os.cpu_count(), num_gpus=cfg.num_gpus,
                 include_dashboard=False, log_to_driver=True)
        log.info("started a local Ray with %s CPUs", ray.cluster_resources().get("CPU"))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress_bars
    ctx.print_on_execution_start = cfg.progress_bars


@dataclass
class StageSummary:
    stage: str
    model_id: str
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "items_per_second": round(self.items_per_second, 3)}, default=str)

    def log(self) -> None:
        log.info("%s [%s]: %d items, %d skipped as already done, %d done, %d failed, %.1fs (%.2f items/s)%s",
                 self.stage, self.model_id, self.total, self.skipped, self.done, self.failed, self.seconds,
                 self.items_per_second, "".join(f", {k}={v}" for k, v in self.extra.items()))


class FamilyWriter:
    """Buffers a stage's result rows on the driver, stages them in bulk, and merges them in on `close`."""

    def __init__(self, store: ItemStore, family: Family | Callable[[pa.Table], Family], total: int,
                 stage: str, progress: bool = True):
        # A callable family is resolved from the first rows, when e.g. a vector width becomes known.
        self.store, self._family = store, family
        self.job = uuid.uuid4().hex  # names this job's staging table
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.flushed_at = time.monotonic()
        self.result = UpsertResult()
        self.done = self.failed = 0
        # Items the stage did not apply to, by reason (e.g. {"no audio stream": 3}); neither done nor failed.
        self.skip_reasons: dict[str, int] = {}
        self.bar = tqdm(total=total, desc=stage, unit="item", disable=not progress or total == 0)

    def family(self, rows: pa.Table) -> Family:
        if callable(self._family):
            self._family = self._family(rows)
        return self._family

    def add(self, rows: pa.Table) -> None:
        family = self.family(rows)
        errors = rows[family.error_column]
        skips = rows[family.skip_column].drop_null().to_pylist() if family.skip_column else []
        self.failed += len(errors) - errors.null_count
        self.done += errors.null_count - len(skips)  # a skipped row has no error, and is not done either
        for reason in skips:
            self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
        self.buffer.append(rows)
        self.buffered += rows.num_rows
        self.bar.update(rows.num_rows)
        self.bar.set_postfix(done=self.done, failed=self.failed)
        due = time.monotonic() - self.flushed_at >= self.store.cfg.flush_interval_s
        if due or self.buffered >= self.store.cfg.write_batch_rows:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            rows = pa.concat_tables(self.buffer)
            self.store.stage_family(self.family(rows), rows, self.job)
            self.buffer, self.buffered = [], 0
        self.flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()
        if not callable(self._family):  # rows were written
            self.result = self.store.commit_staged(self._family)
        self.bar.close()
