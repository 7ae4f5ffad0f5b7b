"""The ablation grid's overhead and parallel speed-up: `run_ablation` against the same cells trained one by one
with `run_train` in a plain loop, side by side in one run.

1. loop: every cell's resolved config (`recommenders.ablation.cell_config`) through `run_train`, one after
   another, 2 torch threads each (the baseline: what a user scripting the cells by hand gets).
2. grid, 1 cell at a time: `run_ablation` with `ablate.cpus=2` on a 2-CPU Ray (so each cell gets both cores):
   its overhead over the loop (Ray start, tasks, the table) is the ratio grid / loop, target <= 1.1.
3. grid, 2 cells at a time: `ablate.cpus=1`, 1 torch thread each: the speed-up loop / grid.

Data: a synthetic store (items in topics, topic-plus-noise vectors in two columns) and sequential users, as in
the tests, sized to take a few minutes on 2 cores. Ray is started anew for each grid, so its start counts. The
three ways run `--rounds` times in a rotating order (so none always runs first, on a fresher or busier
machine), each in fresh run folders; the medians are reported.

    .venv/bin/python benchmarks/bench_ablation.py [--items 600 --users 1500 --epochs 6 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402
from jobs.ablate import run_ablation  # noqa: E402
from pipeline.config import SeerecConfig, StoreConfig, validate_config  # noqa: E402
from pipeline.schema import KEY, TIMESTAMP, catalog_schema, vector_family, vector_type  # noqa: E402
from pipeline.store import ItemStore  # noqa: E402
from recommenders import ablation as ab  # noqa: E402
from recommenders.experiment import run_train  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "ablation.json"
TOPICS, DIM = 12, 32


def make_data(root: Path, n_items: int, n_users: int, seed: int = 0) -> None:
    """Items in topics walked in a hidden order by each user; two vector columns of topic plus noise."""
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in range(n_items)]
    store = ItemStore(StoreConfig(uri=str(root / "store")))
    store.create_if_missing()
    now = datetime(2024, 6, 1, tzinfo=UTC)
    store.upsert(pa.Table.from_pylist([{"item_id": i, "media_type": "text", "title": f"item {i}",
                                        "ingest_source": "bench", "ingested_at": now} for i in ids],
                                      schema=catalog_schema()))
    centers = rng.standard_normal((TOPICS, DIM))
    for column, noise in (("vec_a", 0.3), ("vec_b", 1.0)):
        vectors = centers[np.arange(n_items) % TOPICS] + noise * rng.standard_normal((n_items, DIM))
        family = vector_family(column, DIM)
        store.write_family(family, pa.table({
            KEY: ids, column: pa.array(vectors.astype(np.float32).tolist(), vector_type(DIM)),
            family.model_column: ["bench"] * n_items, family.time_column: pa.array([now] * n_items, TIMESTAMP),
            family.error_column: pa.nulls(n_items, pa.string()), f"{column}_source": ["bench"] * n_items}))
    orders = [rng.permutation(np.arange(t, n_items, TOPICS)) for t in range(TOPICS)]
    rows = []
    for u in range(n_users):
        order = orders[rng.integers(TOPICS)]
        start, length = rng.integers(len(order)), rng.integers(5, 15)
        rows += [(f"u{u}", str(order[(start + t) % len(order)]), t) for t in range(length)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(root / "interactions.csv", index=False)


def config(root: Path, name: str, cpus: float, epochs: int) -> SeerecConfig:
    return validate_config({
        "store": {"uri": str(root / "store")}, "ray": {"num_cpus": 2, "progress_bars": False},
        "train": {"epochs": epochs, "patience": epochs, "batch_size": 128, "lr": 3e-3, "progress": False,
                  "runs_dir": str(root / "runs"), "data": {"path": str(root / "interactions.csv")},
                  "sasrec": {"hidden": 32, "max_len": 20}, "sasrec_content": {"hidden": 32, "max_len": 20},
                  "two_tower": {"dim": 32, "hidden": 64, "max_len": 20}},
        "ablate": {"name": name, "feature_sets": ["vec_a", "vec_b"], "models": ["two_tower", "sasrec_content"],
                   "reference_models": ["sasrec"], "cpus": cpus}})


def timed_grid(cfg: SeerecConfig) -> float:
    import ray

    started = time.perf_counter()
    run_ablation(cfg)
    seconds = time.perf_counter() - started
    ray.shutdown()
    return seconds


def timed_loop(cfg: SeerecConfig) -> float:
    started = time.perf_counter()
    for cell in ab.grid(cfg, cfg.ablate.feature_sets):
        run_train(ab.cell_config(cfg, cell))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    ways = {"loop": lambda root, r: timed_loop(config(root, f"loop-{r}", 2, args.epochs)),
            "grid-1": lambda root, r: timed_grid(config(root, f"grid-1-{r}", 2, args.epochs)),
            "grid-2": lambda root, r: timed_grid(config(root, f"grid-2-{r}", 1, args.epochs))}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_data(root, args.items, args.users)
        cells = len(ab.grid(config(root, "plan", 2, args.epochs), ["vec_a", "vec_b"]))
        for r in range(args.rounds):
            names = list(ways)[r % len(ways):] + list(ways)[:r % len(ways)]
            for name in names:
                seconds[name].append(round(ways[name](root, r), 1))
            print(f"round {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.1f}s" for n in names), flush=True)
        metrics = {name: pd.read_csv(root / "runs" / f"{name}-0" / "ablation.csv")["masked_ndcg@10"].round(4).tolist()
                   for name in ("grid-1", "grid-2")}
    median = {name: float(np.median(values)) for name, values in seconds.items()}
    payload = {"benchmark": "ablation grid vs run_train loop", "items": args.items, "users": args.users,
               "epochs": args.epochs, "cells": cells, "rounds": args.rounds, "seconds": seconds,
               "loop_seconds": median["loop"], "grid_1_parallel_seconds": median["grid-1"],
               "grid_2_parallel_seconds": median["grid-2"],
               "grid_1_over_loop": round(median["grid-1"] / median["loop"], 3),
               # each round's ways run back to back, so a round's own ratio is spared the machine's drift
               "grid_1_over_loop_by_round": [round(g / lo, 3) for g, lo in zip(seconds["grid-1"], seconds["loop"],
                                                                              strict=True)],
               "speedup_2_parallel": round(median["loop"] / median["grid-2"], 2), "test_ndcg@10_masked": metrics}
    write_result(args.out, payload)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
