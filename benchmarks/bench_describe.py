"""Describe throughput: the Ray job (`run_describe`) against a plain loop over the same backend.

Both sides use the same model, batch size, generation settings and items, and both decode the media
themselves (the loop with `decode_item`, the job in its decoding pool). Only the job also writes every
description to the store with its provenance. Each side's time includes loading the model; Ray itself is
started before the clock runs, because a long-lived cluster is how jobs run in production.

The job pays a fixed start (Ray workers, actor and model load) that the loop does not, so its end-to-end
ratio grows with the workload; the script also prints from which size the job reaches 0.9x the loop.

On CPU with the tiny random-weight Qwen2-VL (`--model` builds one when omitted):
    python benchmarks/bench_describe.py --items 2000 --batch-size 8 --max-new-tokens 128 \
        --out benchmarks/results/describe_2000.json
On a GPU with a real model and vLLM, see benchmarks/gpu_describe.sh.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import write_result

from extractors.describe.backends import DescribeRequest, make_backend
from extractors.describe.prompts import PromptSet
from jobs.describe import run_describe
from jobs.ingest import run_ingest
from jobs.synthetic import make_catalog
from pipeline.config import validate_config
from pipeline.logs import setup_logging
from pipeline.media import decode_item
from pipeline.runtime import init_ray


def plain_loop(cfg, manifest: Path) -> tuple[float, int, int, float]:
    """Decode each batch of items, then call the backend on it; nothing is written anywhere."""
    started = time.perf_counter()
    first_batch_s = 0.0
    backend = make_backend(cfg.describe)
    prompts = PromptSet(cfg.describe.prompts)
    items = pd.read_parquet(manifest)
    tokens = done = 0
    for start in range(0, len(items), cfg.describe.items_per_batch):
        requests = []
        for row in items.iloc[start:start + cfg.describe.items_per_batch].itertuples():
            media = decode_item(row.media_uri, row.media_type, cfg.media)
            requests.append(DescribeRequest(row.media_type, prompts.render(row.media_type, row.title), media.frames,
                                            media.fps, media.indices, media.total_frames))
        generations = backend.generate(requests)
        tokens += sum(g.generated_tokens for g in generations)
        done += len(generations)
        first_batch_s = first_batch_s or time.perf_counter() - started
    return time.perf_counter() - started, done, tokens, first_batch_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: build the tiny test model)")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--num-gpus", type=float, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    setup_logging()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from jobs.tiny_models import make_tiny_qwen2_vl

            model = str(make_tiny_qwen2_vl(root / "tiny-qwen2-vl"))
        catalog = make_catalog(root / "catalog", n_items=args.items, n_users=2, seed=0)
        cfg = validate_config({
            "store": {"uri": str(root / "store")},
            "media": {"num_frames": 8, "max_side": 448},
            "ingest": {"source": "manifest", "path": str(catalog.manifest)},
            "describe": {"model": model, "backend": args.backend, "items_per_batch": args.batch_size,
                         "num_gpus": args.num_gpus, "generation": {"max_new_tokens": args.max_new_tokens}},
        })
        run_ingest(cfg)
        init_ray(cfg.ray)

        loop_seconds, loop_items, loop_tokens, loop_first = plain_loop(cfg, catalog.manifest)
        job = run_describe(cfg)

    loop_rate, job_rate = loop_items / loop_seconds, (job.done + job.failed) / job.seconds
    # Steady state: after each side's first batch is out (model loaded, workers up).
    loop_steady = (loop_items - args.batch_size) / (loop_seconds - loop_first)
    job_steady = ((job.done + job.failed - job.extra["first_result_items"])
                  / (job.seconds - job.extra["first_result_s"]))
    job_tokens = job.extra.get("tokens_generated", 0)
    crossover = items_for_ratio(0.9, loop_rate, job.extra["first_result_s"], job.extra["first_result_items"],
                                job_steady)
    print(f"{'':24}{'items/s':>10}{'tokens/s':>10}{'seconds':>10}{'first batch s':>15}{'steady items/s':>16}")
    print(f"{'plain loop':24}{loop_rate:10.2f}{loop_tokens / loop_seconds:10.1f}{loop_seconds:10.1f}"
          f"{loop_first:15.1f}{loop_steady:16.2f}")
    print(f"{'seerec describe job':24}{job_rate:10.2f}{job_tokens / job.seconds:10.1f}{job.seconds:10.1f}"
          f"{job.extra['first_result_s']:15.1f}{job_steady:16.2f}")
    print(f"ratio job/loop (items/s): {job_rate / loop_rate:.2f} end to end, {job_steady / loop_steady:.2f} steady")
    print("the job reaches 0.9x the loop end to end from "
          + (f"about {crossover:,.0f} items" if crossover else "no workload size (its steady rate is too low)")
          + " (from this run's start-up and steady rates)")
    if args.out:
        write_result(args.out, {
            "benchmark": "describe", "model": model if args.model else "tiny random-weight Qwen2-VL (test model)",
            "backend": args.backend, "items": args.items, "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "loop": {"seconds": loop_seconds, "items_per_s": loop_rate, "tokens_per_s": loop_tokens / loop_seconds,
                     "first_batch_s": loop_first, "steady_items_per_s": loop_steady},
            "job": {"seconds": job.seconds, "items_per_s": job_rate, "tokens_per_s": job_tokens / job.seconds,
                    "done": job.done, "failed": job.failed, "first_batch_s": job.extra["first_result_s"],
                    "steady_items_per_s": job_steady},
            "ratio": job_rate / loop_rate, "ratio_steady": job_steady / loop_steady,
            "items_for_ratio_0_9": crossover,
        })


def items_for_ratio(ratio: float, loop_rate: float, start_s: float, start_items: int,
                    steady_rate: float) -> float | None:
    """The workload size from which the job runs at `ratio` times the loop's rate end to end, modelling the job
    as its start-up (the first result after `start_s`) followed by its steady rate; None if it never does."""
    # n / (start_s + (n - start_items) / steady) >= ratio * loop  <=>  n * (1 - ratio * loop / steady) >= ...
    gain = 1 - ratio * loop_rate / steady_rate
    if gain <= 0:
        return None
    return max(float(start_items), ratio * loop_rate * (start_s - start_items / steady_rate) / gain)


if __name__ == "__main__":
    main()
