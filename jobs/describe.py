"""Describe video and image items with a multimodal LLM (`seerec describe`, `python -m jobs.describe`).

Ray Data: the items still to do → a CPU decoding pool (frames or the image) → an actor pool holding the
model (transformers or vLLM, `num_gpus` per actor) → descriptions stream to the driver, which merges
them into the store in bulk. Items already described by the same model with the same prompt are skipped.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np
import pyarrow as pa

from extractors.describe.describer import Describer
from extractors.describe.prompts import PromptSet
from pipeline.config import SeerecConfig
from pipeline.filters import to_sql
from pipeline.runtime import FamilyWriter, StageSummary, init_ray, media_pipeline
from pipeline.schema import Family, description_family, error_values
from pipeline.store import ItemStore

log = logging.getLogger("seerec.describe")


def run_describe(cfg: SeerecConfig, force: bool = False) -> StageSummary:
    d = cfg.describe
    store = ItemStore(cfg.store)
    family = description_family(d.column)
    prompts = PromptSet(d.prompts)
    started = time.perf_counter()
    where = " AND ".join(filter(None, ["`media_type` IN ('video', 'image')", to_sql(d.where, store.schema)]))
    todo = store.pending(family, d.model, ["media_uri", "media_type", "title"], force, where,
                         settings={family.extras[0].name: prompts.ids()})
    total = store.count(where)
    summary = StageSummary("describe", d.model, total=total, skipped=total - todo.num_rows)
    if todo.num_rows:
        init_ray(cfg.ray)
        described = media_pipeline(todo, cfg.media, Describer, d)
        params = json.dumps({"backend": d.backend, **d.generation.model_dump(), "media": cfg.media.model_dump()},
                            sort_keys=True)
        writer = FamilyWriter(store, family, todo.num_rows, "describe")
        tokens = 0
        for batch in described.iter_batches(batch_size=None, batch_format="numpy"):
            if "first_result_s" not in summary.extra:  # start-up cost: workers, model load, first batch
                summary.extra["first_result_s"] = round(time.perf_counter() - started, 2)
                summary.extra["first_result_items"] = len(batch["item_id"])
            rows = description_rows(batch, family, d.model, params)
            tokens += int(np.sum(batch["tokens"]))
            writer.add(rows)
        writer.close()
        summary.done, summary.failed = writer.done, writer.failed
        store.finalize()
        summary.extra["tokens_generated"] = tokens
    summary.seconds = time.perf_counter() - started
    if summary.seconds and "tokens_generated" in summary.extra:
        summary.extra["tokens_per_second"] = round(summary.extra["tokens_generated"] / summary.seconds, 2)
    summary.log()
    return summary


def description_rows(batch: dict[str, np.ndarray], family: Family, model_id: str, params: str) -> pa.Table:
    def texts(values) -> list[str | None]:
        return [v if isinstance(v, str) else None for v in values]

    return family.rows(pa.array(batch["item_id"], pa.string()), texts(batch["description"]), model_id,
                       error_values(batch["error"]), prompt_id=texts(batch["prompt_id"]), params=params,
                       prompt_tokens=batch["prompt_tokens"], tokens=batch["tokens"])


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_describe, "Describe video and image items with a multimodal LLM.", argv,
                    {"force": "re-describe items already described by the same model and prompt"})


if __name__ == "__main__":
    sys.exit(main())
