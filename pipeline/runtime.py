"""What every job shares: logging, joining or starting Ray, bulk writes from the driver, and a summary.

Writes happen on the driver, not in the Ray workers: stage results stream back through
`iter_batches` and are merged into the store in large batches. One writer means no commit conflicts
within a job, and a kill loses at most the unflushed batch, which the next run redoes because those
items are not marked done.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from rich.logging import RichHandler
from tqdm.auto import tqdm

from pipeline.config import MediaConfig, RayConfig
from pipeline.schema import Family
from pipeline.store import ItemStore, UpsertResult

log = logging.getLogger("seerec")


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)
    # Ray starts its raylet with fork+exec after LanceDB is loaded; exec makes that safe, so the
    # fork warnings that LanceDB and Lance print for it are noise.
    warnings.filterwarnings("ignore", message=".*fork.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "ray.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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


def vector_column(vectors: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A 2-D float array as fixed_size_list<float32>[D], null where `valid` is False."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1], mask=pa.array(~valid))


def work_dataset(table: pa.Table, batch_size: int, concurrency: int):
    """The work as a Ray dataset of small blocks (a few batches each).

    Small blocks keep every actor busy and let results stream back to the driver's writer early, instead
    of arriving in a few large lumps at the end.
    """
    import ray

    per_block = batch_size * max(1, min(4, -(-table.num_rows // (batch_size * 2 * concurrency))))
    return ray.data.from_arrow([table.slice(o, per_block) for o in range(0, table.num_rows, per_block)])


def media_pipeline(todo: pa.Table, media: MediaConfig, stage: type, stage_cfg):
    """The shape every media stage shares: a CPU pool decoding frames or images feeds a model actor pool.

    `stage_cfg` is the stage's config section (batch_size, concurrency, decode_concurrency, num_gpus,
    num_cpus); the stage class is built once per actor with it.
    """
    import ray

    from pipeline.media import FrameDecoder

    decoded = work_dataset(todo, stage_cfg.batch_size, stage_cfg.concurrency).map_batches(
        FrameDecoder, fn_constructor_kwargs={"cfg": media.model_dump()}, batch_size=stage_cfg.batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=stage_cfg.decode_concurrency),
    )
    return decoded.map_batches(
        stage, fn_constructor_kwargs={"cfg": stage_cfg.model_dump()}, batch_size=stage_cfg.batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=stage_cfg.concurrency),
        num_gpus=stage_cfg.num_gpus, num_cpus=stage_cfg.num_cpus,
    )


class FamilyWriter:
    """Buffers a stage's result rows on the driver and merges them into the store in bulk."""

    def __init__(self, store: ItemStore, family: Family | Callable[[pa.Table], Family], total: int,
                 stage: str, progress: bool = True):
        # A callable family is resolved from the first rows, when e.g. a vector width becomes known.
        self.store, self._family = store, family
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.result = UpsertResult()
        self.done = self.failed = 0
        self.bar = tqdm(total=total, desc=stage, unit="item", disable=not progress or total == 0)

    def family(self, rows: pa.Table) -> Family:
        if callable(self._family):
            self._family = self._family(rows)
        return self._family

    def add(self, rows: pa.Table) -> None:
        errors = rows[self.family(rows).error_column]
        self.failed += len(errors) - errors.null_count
        self.done += errors.null_count
        self.buffer.append(rows)
        self.buffered += rows.num_rows
        self.bar.update(rows.num_rows)
        self.bar.set_postfix(done=self.done, failed=self.failed)
        if self.buffered >= self.store.cfg.write_batch_rows:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            rows = pa.concat_tables(self.buffer)
            self.result += self.store.write_family(self.family(rows), rows)
            self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.bar.close()
