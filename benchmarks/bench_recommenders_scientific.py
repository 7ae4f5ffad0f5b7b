"""Content features on Amazon Scientific: ID-only SASRec vs text-only vs both, and text cold start.

1. Leave-one-out (the GUIDE's protocol), full ranking over all 4,344 items: SASRec (CE) with ID embeddings
   only, `sasrec_content` with the MiniLM text vectors only (`id_embedding: false`), and with both.
2. Cold start: 10% of the items are held out of training entirely (half validation, half test); the target
   of each evaluated user is the first held-out item after at least one training item. Two-tower (text) and
   content kNN (text) against popularity and the random-ranking expectation.

Text vectors: MiniLM (all-MiniLM-L6-v2) of "title. description", cached by bench_semantic_ids.py in
benchmarks/.cache/scientific-minilm.npy (row i = item id i). Tuned / early-stopped on validation NDCG@10
with history masked; test reported masked and unmasked.

    .venv/bin/python benchmarks/bench_recommenders_scientific.py [--epochs 60]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_sasrec_beauty import seerec_run  # noqa: E402
from benchmarks.common import REPO, write_result  # noqa: E402
from recommenders.data import cold_start, leave_one_out, load_interactions  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "amazon-scientific" / "Scientific.inter.json"
CACHE = REPO / "benchmarks" / ".cache" / "scientific-minilm.npy"
OUT = REPO / "benchmarks" / "results" / "recommenders_scientific.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--vectors", default=str(CACHE))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    vectors = np.load(args.vectors)
    universe = [str(i) for i in range(len(vectors))]  # index i = item id i = vector row i
    data = load_interactions(args.data, item_universe=universe)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    payload = {"dataset": "amazon-scientific", "device": device,
               "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "selection": "best validation NDCG@10 (history masked)", "leave_one_out": [], "cold_start": []}
    train = {"epochs": args.epochs, "patience": args.patience, "batch_size": 128, "lr": 1e-3, "seed": 0,
             "eval_batch_size": 2048}
    sasrec = {"hidden": 64, "layers": 2, "heads": 1, "dropout": 0.5, "max_len": 50, "loss": "ce"}

    def report(section: str, run: dict) -> None:
        payload[section].append(run)
        print(section, json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
        write_result(args.out, copy.deepcopy(payload))

    started = time.perf_counter()
    split = leave_one_out(data)
    report("leave_one_out", {**seerec_run(split, "sasrec", sasrec, train), "features": "ids"})
    report("leave_one_out", {**seerec_run(split, "sasrec_content", {**sasrec, "id_embedding": False}, train,
                                          vectors), "features": "text"})
    report("leave_one_out", {**seerec_run(split, "sasrec_content", {**sasrec, "id_embedding": True}, train,
                                          vectors), "features": "ids+text"})
    cold = cold_start(data, share=0.1, seed=0)
    payload["cold_split"] = {**cold.summary(), "cold_items": len(cold.cold_items)}
    report("cold_start", {**seerec_run(cold, "popularity", {}, train), "features": "-"})
    report("cold_start", {**seerec_run(cold, "content_knn", {}, train, vectors), "features": "text"})
    report("cold_start", {**seerec_run(cold, "two_tower", {}, {**train, "lr": 1e-3}, vectors), "features": "text"})
    # Random ranking: the target lands uniformly among the items left after masking the history.
    left = np.array([cold.n_items - len(set(h.tolist())) for h in cold.test.histories])
    payload["cold_start_random_recall@10"] = float(np.mean(np.minimum(10, left) / left))
    payload["seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.out, copy.deepcopy(payload))
    print(f"random recall@10 {payload['cold_start_random_recall@10']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
