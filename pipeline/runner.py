"""The one runner of every Ray Data stage: a `Stage` declaration in, its column family in the store out.

pending items (not done by this model and settings, or failed) → summary counts → Ray → a dataset of one
model call per block → the decode pool, if the stage has one → the model actor pool → the driver's
`FamilyWriter` (flushes staged, merged once per stage) → one `store.finalize` at the end of the job → a logged
`StageSummary` per stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyarrow as pa

from pipeline.config import SeerecConfig, StageSection
from pipeline.filters import quote_text, to_sql
from pipeline.logs import RESUME_HINT
from pipeline.models import for_workers, same_model
from pipeline.runtime import FamilyWriter, StageSummary, init_ray, pool_options
from pipeline.schema import Family, is_vector_field
from pipeline.stage import Stage, decoder_roots
from pipeline.store import ItemStore


def run_stage(stage: Stage, cfg: SeerecConfig, force: bool = False) -> StageSummary:
    return run_stages([stage], cfg, force)[0]


def run_stages(stages: Sequence[Stage], cfg: SeerecConfig, force: bool = False) -> list[StageSummary]:
    """Run stages one after the other on one store, then compact and index it once."""
    for stage in stages:
        stage.check(stage.section(cfg))
    store = ItemStore(cfg.store)
    summaries = [_run(stage, cfg, store, force) for stage in stages]
    schema = store.schema
    columns = [stage.family(stage.section(cfg)).name for stage in stages]
    store.finalize([c for c in columns if c in schema.names and is_vector_field(schema.field(c))])
    for stage, column, summary in zip(stages, columns, summaries, strict=True):
        if summary.done or summary.failed:  # a run that wrote nothing ends at no new version
            store.tag_version(stage.name, summary.model_id, column=column, seconds=summary.seconds)
    return summaries


def _run(stage: Stage, cfg: SeerecConfig, store: ItemStore, force: bool) -> StageSummary:
    section = stage.section(cfg)
    model_id, family = stage.model_id(section), stage.family(section)
    started = time.perf_counter()
    where = _where(stage, cfg, store)
    settings = {family.extra_column(suffix): values for suffix, values in stage.settings(section).items()}
    store.commit_staged(family)  # adopt what a killed run of this stage flushed, so that it is not redone
    todo = store.pending(family, model_id, stage.reads(section), force, where, settings=settings,
                         also_done_by=[] if force else _aliases(stage, store, family, model_id))
    total = store.count(where)
    summary = StageSummary(stage.name, model_id, total=total, skipped=total - todo.num_rows)
    metrics = [metric() for metric in stage.metrics]
    if todo.num_rows:
        if stage.prepare is not None:
            todo = stage.prepare(todo, section)
        init_ray(cfg.ray)
        constants = stage.constants(cfg, section)
        writer = FamilyWriter(store, family.of_rows, todo.num_rows, stage.name, log_every_s=cfg.ray.progress_log_s)
        try:
            for batch in _results(stage, cfg, section, todo).iter_batches(batch_size=None, batch_format="numpy"):
                for metric in metrics:
                    metric.add(batch, time.perf_counter() - started)
                writer.add(family.batch_rows(batch, stage.output, model_id, **constants))
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stage what reached the driver; the next run adopts it
            writer.flush()
            raise type(exc)(RESUME_HINT) from None
        writer.close()
        summary.done, summary.failed = writer.done, writer.failed
        summary.extra.update(writer.skip_reasons)
    summary.seconds = time.perf_counter() - started
    for metric in metrics:
        summary.extra.update(metric.extra(summary.seconds))
    summary.log()
    return summary


def _aliases(stage: Stage, store: ItemStore, family: Family, model_id: str) -> list[str]:
    """Other recorded ids of this run's model (another spelling or copy of the same folder, or the spelling of
    an earlier seerec): items done under them are done."""
    if family.model_column not in store.schema.names:
        return []
    return [m for m in store.model_ids(family.name) if m != model_id and same_model(stage.recorded_as(m), model_id)]


def _where(stage: Stage, cfg: SeerecConfig, store: ItemStore) -> str | None:
    media = f"`media_type` IN ({', '.join(quote_text(t) for t in stage.media_types)})" if stage.media_types else None
    return " AND ".join(filter(None, [media, to_sql(stage.where(cfg), store.schema)])) or None


def _results(stage: Stage, cfg: SeerecConfig, section: StageSection, todo: pa.Table):
    """The lazy Ray dataset of the stage's results: blocks → decode pool → model actor pool."""
    import ray

    data = work_dataset(todo, section.items_per_batch)
    pool = pool_options(cfg.ray)
    if stage.decoder is not None:
        data = data.map_batches(
            stage.decoder.model, fn_constructor_kwargs={"cfg": stage.decoder.section(cfg).model_dump(),
                                   "roots": decoder_roots(cfg)},
            batch_size=section.items_per_batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=section.decode_concurrency), **pool,
        )
    return data.map_batches(
        stage.model, fn_constructor_kwargs={"cfg": for_workers(section.model_dump())},
        batch_size=section.items_per_batch,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=section.concurrency),
        num_gpus=section.num_gpus, num_cpus=section.num_cpus, **pool,
    )


def work_dataset(table: pa.Table, items_per_batch: int):
    """The work as a Ray dataset of one model call per block.

    Ray Data hands a map task's output on when the task ends, so a block is the unit in which results reach
    the driver's writer: one call per block lets them stream as each call finishes, keeps every actor busy to
    the end, and lets the decode pool work on the next items while the model runs. `from_blocks` keeps the
    blocks as given and reads their metadata on the driver, where `from_arrow` would first run one Ray task
    per block (seconds of start-up, in fresh workers, before any model actor is asked for).
    """
    import ray

    return ray.data.from_blocks([table.slice(o, items_per_batch) for o in range(0, table.num_rows, items_per_batch)])
