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
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow as pa
from tqdm.auto import tqdm

from pipeline.config import RayConfig
from pipeline.logs import Terminated
from pipeline.schema import Family
from pipeline.store import ItemStore, UpsertResult

log = logging.getLogger("seerec")


def local_ray(cfg: RayConfig) -> bool:
    """Whether a job starts its own single-node Ray (no config address, no RAY_ADDRESS) instead of joining one."""
    return not (cfg.address or os.environ.get("RAY_ADDRESS"))


QUIET_ENV = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")  # progress bars off outside a terminal


def init_ray(cfg: RayConfig) -> None:
    """Join an existing cluster (config address or RAY_ADDRESS, as `ray job submit` sets) or start one."""
    if local_ray(cfg) and "ray" not in sys.modules:
        # Ray 2.60 turns token authentication on for a local cluster and warns that it did unless the mode is
        # chosen; choosing Ray's own default keeps it on without the notice (RAY_AUTH_MODE=disabled still wins).
        # Ray reads the mode once, when it is imported.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    # Ray 2.60 marks every remote arg of map_batches deprecated but names no replacement for max_restarts (see
    # `pool_options`), which works in the pinned Ray. Set after importing Ray, whose own filter would come first.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
    if ray.is_initialized():
        return
    if not local_ray(cfg):
        address = cfg.address or os.environ["RAY_ADDRESS"]
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
    else:
        if not sys.stderr.isatty():
            # Bars that the workers draw (model loading) would reach the log as '\r' fragments. The workers of a
            # local Ray inherit the driver's environment; a runtime_env would instead make Ray start a new worker
            # for the first task rather than use the ones it started with the cluster (about 1 s on 2 cores).
            for name in QUIET_ENV:
                os.environ.setdefault(name, "1")
        ray.init(num_cpus=cfg.num_cpus or os.cpu_count(), num_gpus=cfg.num_gpus,
                 include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
        log.info("started a local Ray with %s CPUs", ray.cluster_resources().get("CPU"))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # in place of Ray's, which exits without a word
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress_bars
    ctx.print_on_execution_start = cfg.progress_bars
    if not cfg.progress_bars:
        # Importing ray.data configured its logger afresh; its info lines and its notice that bars are off
        # (they are, on purpose: the stage's own progress is shown) are not for seerec's users.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def pool_options(cfg: RayConfig) -> dict:
    """Ray remote args for a stage's actor pools.

    Ray Data restarts a dead actor forever by default, and Ray then warns that the constructor arguments (Ray
    Data's own, in the object store) may be lost with their node. On a local Ray there is one node, and a
    crash that repeats would restart forever; there the job fails instead, and a re-run resumes from the
    flushed rows. A cluster keeps Ray Data's restarts, which carry a job over a lost node.
    """
    return {"max_restarts": 0} if local_ray(cfg) else {}


def _terminate(signum, frame) -> None:
    raise Terminated()


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
                 stage: str, progress: bool = True, log_every_s: float = 30.0):
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
        # A bar in a terminal; elsewhere (a log file, a pipe, a Ray job's log) a line every `log_every_s`.
        self.stage, self.total, self.seen = stage, total, 0
        self.started = self.logged_at = time.monotonic()
        self.log_every_s = log_every_s if progress else None
        self.bar = tqdm(total=total, desc=stage, unit="item", disable=not progress or total == 0
                        or not sys.stderr.isatty())

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
        self.progress(rows.num_rows)
        due = time.monotonic() - self.flushed_at >= self.store.cfg.flush_interval_s
        if due or self.buffered >= self.store.cfg.write_batch_rows:
            self.flush()

    def progress(self, rows: int) -> None:
        self.seen += rows
        now = time.monotonic()
        if not self.bar.disable:
            self.bar.update(rows)
            self.bar.set_postfix(done=self.done, failed=self.failed)
        elif self.log_every_s is not None and now - self.logged_at >= self.log_every_s:
            log.info("%s: %s/%s items, %s failed, %.1f items/s", self.stage, f"{self.seen:,}", f"{self.total:,}",
                     f"{self.failed:,}", self.seen / (now - self.started))
            self.logged_at = now

    def flush(self) -> None:
        if self.buffer:
            rows = pa.concat_tables(self.buffer)
            # An interrupt after the append committed but before the next line makes the interrupt handler stage
            # these rows again; `commit_staged` keeps one row per item, so the store still gets each once.
            self.store.stage_family(self.family(rows), rows, self.job)
            self.buffer, self.buffered = [], 0
        self.flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()
        if not callable(self._family):  # rows were written
            self.result = self.store.commit_staged(self._family)
        self.bar.close()
