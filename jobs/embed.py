"""Embed items into vector columns with Ray Data (`seerec embed`, `python -m jobs.embed`).

Text: render the configured template per item, then a sentence-transformers actor pool.
Images and videos: a CPU decoding pool, then an open_clip actor pool (frames mean-pooled per video).
Each writes its column family through the driver, skipping items already embedded by the same model.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extractors.embed import (
    ClipEmbedder,
    TextEmbedder,
    clip_model_id,
    render_template,
    template_fields,
    text_model_id,
)
from pipeline.config import SeerecConfig
from pipeline.filters import to_sql
from pipeline.runtime import FamilyWriter, StageSummary, init_ray, media_pipeline, vector_column, work_dataset
from pipeline.schema import KEY, Family, error_values, vector_family
from pipeline.store import ItemStore

log = logging.getLogger("seerec.embed")


def run_embed(cfg: SeerecConfig, force: bool = False) -> list[StageSummary]:
    store = ItemStore(cfg.store)
    summaries, columns = [], []
    if cfg.embed.text.enabled:
        summaries.append(embed_text(cfg, store, force))
        columns.append(cfg.embed.text.column)
    if cfg.embed.image.enabled:
        summaries.append(embed_media(cfg, store, force))
        columns.append(cfg.embed.image.column)
    store.finalize([c for c in columns if c in store.schema.names])
    return summaries


def embed_text(cfg: SeerecConfig, store: ItemStore, force: bool = False) -> StageSummary:
    text_cfg = cfg.embed.text
    fields = template_fields(text_cfg.template)
    model_id = text_model_id(text_cfg)
    family_name = text_cfg.column
    started = time.perf_counter()
    store.require_columns(fields)
    todo = store.pending(vector_family(family_name, 1), model_id, fields, force, _where(cfg, store))
    texts = [render_template(text_cfg.template, row, _metadata(row)) for row in todo.to_pylist()]
    todo = pa.table({KEY: todo[KEY], "text": pa.array(texts, pa.string())})
    # Texts of similar length batch together, so little of each encoder call is spent on padding.
    todo = todo.take(pc.sort_indices(pc.utf8_length(todo["text"])))
    total = store.count(_where(cfg, store))
    summary = StageSummary("embed-text", model_id, total=total, skipped=total - todo.num_rows)
    if todo.num_rows:
        init_ray(cfg.ray)
        import ray

        results = work_dataset(todo, text_cfg.batch_size, text_cfg.concurrency).map_batches(
            TextEmbedder, fn_constructor_kwargs={"cfg": text_cfg.model_dump()}, batch_size=text_cfg.batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=text_cfg.concurrency),
            num_gpus=text_cfg.num_gpus, num_cpus=text_cfg.num_cpus,
        )
        _write(results, store, todo.num_rows, "embed text", family_name, model_id, text_cfg.template, summary)
    summary.seconds = time.perf_counter() - started
    summary.log()
    return summary


def embed_media(cfg: SeerecConfig, store: ItemStore, force: bool = False) -> StageSummary:
    image_cfg = cfg.embed.image
    model_id = clip_model_id(image_cfg)
    started = time.perf_counter()
    media = " AND ".join(filter(None, ["`media_type` IN ('video', 'image')", _where(cfg, store)]))
    todo = store.pending(vector_family(image_cfg.column, 1), model_id, ["media_uri", "media_type"], force, media)
    total = store.count(media)
    summary = StageSummary("embed-media", model_id, total=total, skipped=total - todo.num_rows)
    if todo.num_rows:
        init_ray(cfg.ray)
        results = media_pipeline(todo, cfg.media, ClipEmbedder, image_cfg)
        source = f"{cfg.media.sampling}:{cfg.media.num_frames if cfg.media.sampling == 'uniform' else cfg.media.fps}"
        _write(results, store, todo.num_rows, "embed media", image_cfg.column, model_id, source, summary)
    summary.seconds = time.perf_counter() - started
    summary.log()
    return summary


def _where(cfg: SeerecConfig, store: ItemStore) -> str | None:
    return to_sql(cfg.embed.where, store.schema)


def _write(results, store: ItemStore, total: int, stage: str, column: str, model_id: str, source: str,
           summary: StageSummary) -> None:
    writer = FamilyWriter(store, _vector_family_of(column), total, stage)
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        writer.add(vector_rows(batch, column, model_id, source))
    writer.close()
    summary.done, summary.failed = writer.done, writer.failed


def _vector_family_of(column: str) -> Callable[[pa.Table], Family]:
    return lambda rows: vector_family(column, rows.schema.field(column).type.list_size)


def vector_rows(batch: dict[str, np.ndarray], column: str, model_id: str, source: str) -> pa.Table:
    """Encoder output (item_id, vector, error) as the rows of a vector column family."""
    errors = error_values(batch["error"])
    valid = np.array([e is None for e in errors], dtype=bool)
    vectors = vector_column(np.asarray(batch["vector"]), valid)
    family = vector_family(column, vectors.type.list_size)
    return family.rows(pa.array(batch["item_id"], pa.string()), vectors, model_id, errors, source=source)


def _metadata(row: dict) -> dict:
    raw = row.get("metadata")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_embed, "Embed item text and media into the seerec item store.", argv,
                    {"force": "re-embed items already embedded by the same model"})


if __name__ == "__main__":
    sys.exit(main())
