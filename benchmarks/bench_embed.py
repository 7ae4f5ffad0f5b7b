"""Text embedding: seerec's `run_embed` (Ray Data actor pool, driver writes) against a bare sentence-transformers loop.

Both sides embed the same MicroLens titles (template "{title}") with the same packaged all-MiniLM-L6-v2 model,
batch size and torch thread count, on CPU, and end with the vectors in a LanceDB table. The catalog is
ingested into a temporary store beforehand, untimed.

seerec: `jobs.embed.run_embed(cfg)` with image embedding off, from a cold start: it starts Ray, starts the
actor (which loads the model), streams blocks back to the driver, merges them into the store with
`write_family`, then finalises the store. Reported as total wall time, and as steady-state rows/s from the
first block the driver receives to the last write (excluding Ray start, model load and the first block).
Baseline: `SentenceTransformer(path).encode(titles, batch_size=...)`, then one bare `table.add` of item_id
plus vector into a fresh LanceDB table; reported with and without its model load.

    python benchmarks/bench_embed.py --limit 0 --out benchmarks/results/embed.json
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from common import REPO, write_result

import jobs.embed
import pipeline.runner
from extractors.embed import render_template, text_model_path
from jobs.ingest import run_ingest
from pipeline.config import load_config
from pipeline.logs import setup_logging
from pipeline.runtime import FamilyWriter
from pipeline.schema import KEY, vector_column
from pipeline.store import ItemStore

MICROLENS = REPO.parent / "shared" / "data" / "microlens-sample"
TITLES = MICROLENS / "MicroLens-100k_title_en.csv"


class TimedWriter(FamilyWriter):
    """seerec's own writer, noting when each block reaches the driver and when the last write ends."""

    arrivals: list[tuple[float, int]] = []
    closed_at: float = 0.0

    def add(self, rows: pa.Table) -> None:
        TimedWriter.arrivals.append((time.perf_counter(), rows.num_rows))
        super().add(rows)

    def close(self) -> None:
        super().close()
        TimedWriter.closed_at = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="titles to embed; 0 = all (19,738)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (= ray.num_cpus "
                                                                "and embed.text.num_cpus for seerec)")
    parser.add_argument("--actors", type=int, default=1, help="seerec's encoder actors, sharing the threads "
                                                                "(embed.text.concurrency; num_cpus = threads / actors)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()
    if not TITLES.is_file():
        print(f"skipped: the MicroLens titles are absent ({TITLES}); nothing to benchmark")
        return

    import torch

    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        overrides = [
            f"store.uri={Path(tmp) / 'seerec'}", "ingest.source=microlens", f"ingest.path={MICROLENS}",
            "embed.image.enabled=false", 'embed.text.template="{title}"', "embed.text.device=cpu",
            f"embed.text.items_per_batch={args.batch_size}", f"embed.text.encode_batch_size={args.batch_size}",
            f"embed.text.num_cpus={args.threads / args.actors:g}", f"embed.text.concurrency={args.actors}",
            f"ray.num_cpus={args.threads}",
        ]
        if args.limit:
            overrides.append(f"ingest.limit={args.limit}")
        cfg = load_config(None, overrides)
        run_ingest(cfg)  # untimed
        store = ItemStore(cfg.store)
        catalog = store.scan([KEY, "title"])
        texts = [render_template(cfg.embed.text.template, row, {}) for row in catalog.to_pylist()]
        keep = [i for i, t in enumerate(texts) if t.strip()]  # seerec records empty texts as errors, unencoded
        ids, texts = catalog[KEY].take(keep), [texts[i] for i in keep]
        n = len(texts)
        path = text_model_path(cfg.embed.text.model)
        print(f"embedding {n} MicroLens titles ({catalog.num_rows - n} empty skipped), model {cfg.embed.text.model}, "
              f"batch {args.batch_size}, {args.threads} torch threads, CPU")

        torch.set_num_threads(args.threads)
        load = {"before_baseline": os.getloadavg()[0]}
        base = baseline(path, texts, ids, args.batch_size, Path(tmp) / "bare")
        load["after_baseline"] = os.getloadavg()[0]
        print(f"  baseline done: {n / base['total_s']:.1f} rows/s total, {n / base['steady_s']:.1f} rows/s with the "
              f"model loaded (1-min load average {load['before_baseline']:.1f} -> {load['after_baseline']:.1f})")
        sr = seerec(cfg)
        load["after_seerec"] = os.getloadavg()[0]
        assert sr["done"] == n, f"seerec embedded {sr['done']} of {n} titles"

    result = {
        "benchmark": "embed",
        "seerec_rows_per_s_total": round(n / sr["total_s"], 1),
        "baseline_rows_per_s_total": round(n / base["total_s"], 1),
        "ratio_total": round(base["total_s"] / sr["total_s"], 3),
        "seerec_rows_per_s_steady": round(sr["steady_rows"] / sr["steady_s"], 1),
        "baseline_rows_per_s_steady": round(n / base["steady_s"], 1),
        "ratio_steady": round((sr["steady_rows"] / sr["steady_s"]) / (n / base["steady_s"]), 3),
        "seerec_seconds": {k: round(v, 2) for k, v in sr.items() if k.endswith("_s")},
        "baseline_seconds": {k: round(v, 2) for k, v in base.items() if k.endswith("_s")},
        "settings": {
            "rows": n, "model": cfg.embed.text.model, "batch_size": args.batch_size, "torch_threads": args.threads,
            "ray_num_cpus": cfg.ray.num_cpus, "actor_num_cpus": cfg.embed.text.num_cpus,
            "actors": cfg.embed.text.concurrency,
            "write_batch_rows": cfg.store.write_batch_rows, "seerec_blocks": sr["blocks"],
            "torch": torch.__version__, "lancedb": lancedb.__version__,
            # The sides run one after the other: a 1-min load average above the CPU count means neighbours
            # competed for the CPUs during the run and the ratio is unreliable.
            "load_average_1min": {k: round(v, 2) for k, v in load.items()},
            "seerec": "jobs.embed.run_embed(cfg), cold: Ray start, actor model load, encode, write_family, finalize",
            "baseline": "SentenceTransformer(path).encode(all titles, batch_size) + one lancedb table.add",
        },
    }
    rows = [
        ("seerec run_embed, total (cold Ray)", sr["total_s"], result["seerec_rows_per_s_total"]),
        ("bare encode + add, incl. model load", base["total_s"], result["baseline_rows_per_s_total"]),
        ("ratio seerec/baseline, total", None, result["ratio_total"]),
        ("seerec steady (first block -> last write)", sr["steady_s"], result["seerec_rows_per_s_steady"]),
        ("bare encode + add, model loaded", base["steady_s"], result["baseline_rows_per_s_steady"]),
        ("ratio seerec/baseline, steady", None, result["ratio_steady"]),
    ]
    print(f"  {'side':<42} {'seconds':>8} {'rows/s':>8}")
    for name, seconds, rate in rows:
        print(f"  {name:<42} {'' if seconds is None else f'{seconds:.1f}':>8} "
              f"{f'{rate:.3f}' if seconds is None else f'{rate:.1f}':>8}")
    print("  seerec breakdown: " + ", ".join(f"{k} {v:.1f}s" for k, v in sr.items() if k.endswith("_s")))
    print("  baseline breakdown: " + ", ".join(f"{k} {v:.1f}s" for k, v in base.items() if k.endswith("_s")))
    if args.out:
        write_result(args.out, result)
        print(f"wrote {args.out}")


def baseline(path: str, texts: list[str], ids: pa.Array, batch_size: int, uri: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    model = SentenceTransformer(path, device="cpu")
    loaded = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=False).astype(np.float32, copy=False)
    encoded = time.perf_counter()
    table = lancedb.connect(str(uri)).create_table("items", pa.table({
        KEY: ids, "text_vec": vector_column(vectors, np.ones(len(vectors), bool))}))
    assert table.count_rows() == len(texts)
    written = time.perf_counter()
    return {"model_load_s": loaded - started, "encode_s": encoded - loaded, "write_s": written - encoded,
            "steady_s": written - loaded, "total_s": written - started}


def seerec(cfg) -> dict:
    import ray

    real_init = pipeline.runner.init_ray
    marks: dict[str, float] = {}

    def timed_init(ray_cfg) -> None:
        marks["ray_start"] = time.perf_counter()
        real_init(ray_cfg)
        marks["ray_ready"] = time.perf_counter()

    pipeline.runner.FamilyWriter, pipeline.runner.init_ray = TimedWriter, timed_init
    TimedWriter.arrivals = []
    try:
        started = time.perf_counter()
        (summary,) = jobs.embed.run_embed(cfg)
        ended = time.perf_counter()
    finally:
        pipeline.runner.FamilyWriter, pipeline.runner.init_ray = FamilyWriter, real_init
        ray.shutdown()
    first, first_rows = TimedWriter.arrivals[0]
    if len(TimedWriter.arrivals) < 2:  # one block only: no steady state to see, so count from Ray being up
        first, first_rows = marks["ray_ready"], 0
    return {
        "done": summary.done, "blocks": len(TimedWriter.arrivals),
        "steady_rows": summary.done + summary.failed - first_rows,
        "before_ray_s": marks["ray_start"] - started,  # plan: read pending rows, render texts
        "ray_start_s": marks["ray_ready"] - marks["ray_start"],
        "first_block_s": first - marks["ray_ready"],  # actor start + model load + first block encoded
        "steady_s": TimedWriter.closed_at - first,  # the other blocks encoded, all blocks written
        "finalize_s": ended - TimedWriter.closed_at,  # optimize (+ indexes when big enough)
        "total_s": ended - started,
    }


if __name__ == "__main__":
    main()
