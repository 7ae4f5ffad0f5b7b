"""Batch recommend for every Amazon Beauty user: `seerec recommend --all` against a bare loop, one model.

A small SASRec run is trained first (or reused from benchmarks/.cache/runs). Then, on the same run folder:

- seerec: the `--all` job (`jobs.recommend.run_recommend`): a Ray Data job whose actor loads the run, ranks
  batches of users and streams rows back, written to Parquet under real user and item ids (atomic rename);
- baseline: a bare loop in this process over `model.score` + the history mask + `torch.topk`, keeping the
  index tensors (no ids, no file), with the model already loaded.

Same k, same exclusion (history masked), same batch size and the same torch threads on both sides. Ray is
started before the clock (as on a running cluster); seerec's time includes the actor start, the model load
in the actor and the Parquet write. The ratio is baseline seconds / seerec seconds (1.0: as fast as the loop).
It also reports the share of users whose top k is the same item list on both sides.

    .venv/bin/python benchmarks/bench_recommend.py [--epochs 1] [--k 10] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BEAUTY_SASREC, REPO, write_result  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from pipeline.logs import setup_logging  # noqa: E402
from pipeline.runtime import init_ray  # noqa: E402
from recommenders.runs import load_run, load_serving  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "amazon-beauty" / "Beauty.txt"
CACHE = REPO / "benchmarks" / ".cache"
OUT = REPO / "benchmarks" / "results" / "recommend.json"


def config(args, run_name: str, out: Path):
    return validate_config({
        "store": {"uri": str(CACHE / "no-store")},
        "ray": {"num_cpus": args.threads},
        "train": {"model": "sasrec", "sasrec": BEAUTY_SASREC, "epochs": args.epochs, "progress": False,
                  "runs_dir": str(CACHE / "runs"), "name": run_name, "device": args.device,
                  "cpu_threads": args.threads, "data": {"path": str(DATA), "join_store": False}},
        "recommend": {"run_dir": str(CACHE / "runs" / run_name), "out": str(out), "k": args.k,
                      "batch_size": args.batch_size, "device": args.device, "cpu_threads": args.threads,
                      "num_gpus": 1 if args.device == "cuda" else 0},
    })


@torch.no_grad()
def bare_loop(model, histories: list[np.ndarray], k: int, batch_size: int) -> torch.Tensor:
    """Top-k item indexes of every user: score, mask the history, torch.topk, batch by batch."""
    out = []
    for start in range(0, len(histories), batch_size):
        batch = histories[start:start + batch_size]
        users = torch.arange(start, start + len(batch), device=model.device)
        scores = model.score(users, batch).float()
        rows = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor([len(h) for h in batch]))
        scores[rows.to(scores.device), torch.from_numpy(np.concatenate(batch)).to(scores.device)] = -torch.inf
        out.append(torch.topk(scores, k, dim=1).indices.cpu())
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("seerec.train").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    run_name = f"bench-recommend-sasrec-{args.epochs}ep"
    parquet = CACHE / "recommend" / "beauty-recs.parquet"
    cfg = config(args, run_name, parquet)
    run_dir = Path(cfg.recommend.run_dir)
    if args.retrain or not (run_dir / "histories.parquet").is_file():
        from recommenders.experiment import run_train

        started = time.perf_counter()
        run_train(cfg)
        print(f"trained {run_name} in {time.perf_counter() - started:.0f}s")

    from jobs.recommend import run_recommend

    started = time.perf_counter()
    init_ray(cfg.ray)
    ray_start = time.perf_counter() - started

    model, _ = load_run(run_dir, args.device)
    data = load_serving(run_dir)
    bare_loop(model, data.histories[:args.batch_size], args.k, args.batch_size)  # warm-up, as the actor's first batch
    started = time.perf_counter()
    top = bare_loop(model, data.histories, args.k, args.batch_size)
    baseline_s = time.perf_counter() - started

    summary = run_recommend(cfg)
    seerec_s = summary.seconds

    frame = pd.read_parquet(parquet)
    item_index = {item: i for i, item in enumerate(data.item_ids)}
    user_index = {user: u for u, user in enumerate(data.user_ids)}
    frame = frame.sort_values(["user_id", "rank"])
    ours = {user_index[u]: [item_index[i] for i in group["item_id"]] for u, group in frame.groupby("user_id")}
    same = np.mean([ours[u] == top[u].tolist() for u in range(len(data.user_ids))])
    n_users = len(data.user_ids)
    result = {
        "benchmark": "recommend", "data": "amazon-beauty", "model": "sasrec", "run": run_name,
        "users": n_users, "items": len(data.item_ids), "k": args.k, "exclude_seen": True, "masking": "masked",
        "batch_size": args.batch_size, "torch_threads": args.threads, "device": args.device,
        "ray_start_seconds": round(ray_start, 2),
        "seerec": {"what": "Ray Data job, 1 actor, rows with ids written to Parquet", "seconds": round(seerec_s, 2),
                   "users_per_second": round(n_users / seerec_s, 1), "rows": summary.rows},
        "baseline": {"what": "bare loop over model.score + mask + torch.topk, tensors only",
                     "seconds": round(baseline_s, 2), "users_per_second": round(n_users / baseline_s, 1)},
        "ratio_seerec_over_baseline_throughput": round(baseline_s / seerec_s, 3),
        "same_top_k_share": round(float(same), 4),
    }
    write_result(args.out, result)
    print(f"seerec {seerec_s:.2f}s ({n_users / seerec_s:.0f} users/s), bare loop {baseline_s:.2f}s "
          f"({n_users / baseline_s:.0f} users/s): ratio {baseline_s / seerec_s:.2f}x; same top {args.k} for "
          f"{same:.1%} of users -> {args.out}")


if __name__ == "__main__":
    main()
