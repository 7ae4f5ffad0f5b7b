"""Content, collaborative and hybrid semantic IDs for seerec's TIGER on Amazon Beauty, at one equal budget.

- content: rkmeans over the MiniLM vectors of each item's text (brand + categories), cached by
  bench_semantic_ids.py in benchmarks/.cache/beauty-minilm.npy.
- collaborative: rkmeans over the item embeddings of an ID-only SASRec trained on the same training split
  (the vectors `seerec train … train.export_column=cf_vec` writes to the store).
- hybrid: both, each scaled to unit rows and joined (`quantize.columns: [text_vec, cf_vec]`).

Every ID set gets the same tokenizer (3 x 256, balanced, + an append dedup level) and the same TIGER size and
number of training epochs, through the shared loop (early stopping on validation NDCG@10 of a fixed random
subset of users, history masked); test metrics come from one constrained beam pass over a fixed random
subset of test users, history masked and unmasked. The budget is sized for 2 CPU cores (a smaller TIGER
than the paper's, a few epochs), so the numbers compare the ID sets with each other, not with TIGER's
published ones.

    .venv/bin/python benchmarks/bench_tiger_ids.py [--epochs 6] [--valid-users 2000] [--test-users 5000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BEAUTY_SASREC, REPO, add_loop_arguments, write_result  # noqa: E402
from benchmarks.generative import (  # noqa: E402
    TIGER_SIZES,
    add_common_arguments,
    beauty,
    loop_settings,
    semantic_ids,
    subset,
)
from extractors.semantic_ids import collision_stats, concat_columns  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from recommenders.evaluate import evaluate  # noqa: E402
from recommenders.train import build_model, fit  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "tiger_ids.json"


def collaborative_vectors(split, epochs: int, lr: float) -> tuple[np.ndarray, dict]:
    """Item embeddings of an ID-only SASRec early-stopped on validation, and how it was trained. Cached in
    benchmarks/.cache under a hash of its settings: every run would otherwise retrain it (~8 min on 2 cores)."""
    train = {"model": "sasrec", "sasrec": BEAUTY_SASREC, "epochs": epochs, "patience": 3, "batch_size": 128,
             "lr": lr, "seed": 0, "eval_batch_size": 2048}
    key = json.dumps({**train, "users": split.n_users}, sort_keys=True)
    path = REPO / "benchmarks" / ".cache" / f"beauty-sasrec-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if path.is_file():
        cached = np.load(path)
        return cached["vectors"], {**json.loads(str(cached["info"])), "cached": path.name}
    vectors, info = train_collaborative_vectors(split, train)
    np.savez(path, vectors=vectors, info=json.dumps(info))
    return vectors, info


def train_collaborative_vectors(split, train: dict) -> tuple[np.ndarray, dict]:
    tcfg = validate_config({"train": {**train, "progress": False}}).train
    model = build_model(tcfg, split.n_users, split.n_items, None)
    history = fit(model, split, tcfg)
    trained = np.zeros(split.n_items, bool)
    trained[np.concatenate(split.train)] = True
    return model.item_embeddings().detach().cpu().numpy(), {
        "model": "sasrec", "hparams": BEAUTY_SASREC, "lr": tcfg.lr, "best_epoch": history[0]["best_epoch"],
        "valid_ndcg@10": round(max(h["valid_ndcg@10"] for h in history), 5),
        "seconds_to_best": history[0]["seconds_to_best"],
        "items_without_training_interactions": int((~trained).sum())}


def id_stats(ids: np.ndarray, levels: int) -> dict:
    """Collisions of the code tuples before dedup, and the deepest dedup counter."""
    return {**collision_stats(ids[:, :levels]), "max_dedup": int(ids[:, levels].max())}


def train_tiger(split, ids: np.ndarray, args, valid) -> tuple[object, list[dict], float]:
    tiger = {**args.tiger, "codebook_size": int(ids.max()) + 1}
    tcfg = validate_config({"train": {"model": "tiger", "tiger": tiger, **loop_settings(args), "seed": 0,
                                      "progress": False, "eval_batch_size": 512}}).train
    model = build_model(tcfg, split.n_users, split.n_items, ids)
    started = time.perf_counter()
    history = fit(model, replace(split, valid=valid), tcfg)
    return model, history, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_loop_arguments(parser, epochs=6, patience=3)
    parser.add_argument("--tiger", default="{}", help="JSON overrides of the CPU-sized TIGER (train.tiger keys)")
    parser.add_argument("--sasrec-epochs", type=int, default=20)
    parser.add_argument("--sasrec-lr", type=float, default=4e-3)
    parser.add_argument("--kinds", default="content,collaborative,hybrid")
    parser.add_argument("--valid-users", type=int, default=2000)
    parser.add_argument("--test-users", type=int, default=5000)
    add_common_arguments(parser, OUT, lr=2e-3)
    args = parser.parse_args()
    args.tiger = {**TIGER_SIZES["cpu"], **json.loads(args.tiger)}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, split, text, content_ids, _ = beauty(args.users, args.levels, args.codebook)
    valid, test = subset(split.valid, args.valid_users), subset(split.test, args.test_users, seed=1)
    kinds = args.kinds.split(",")
    payload = {"dataset": "amazon-beauty", "split": "leave-one-out", "users": data.n_users, "device": "cpu",
               "threads": torch.get_num_threads(), "valid_users": len(valid), "test_users": len(test),
               "tokenizer": {"kind": "rkmeans", "levels": args.levels, "codebook": args.codebook, "balance": 1.0,
                             "dedup": "append"},
               "tiger": args.tiger,
               "train": loop_settings(args), "ids": {}}
    vectors = {"content": text}
    if {"collaborative", "hybrid"} & set(kinds):
        cf, payload["collaborative_source"] = collaborative_vectors(split, args.sasrec_epochs, args.sasrec_lr)
        vectors |= {"collaborative": cf, "hybrid": concat_columns([text, cf], unit_rows=True)}
        print("collaborative vectors:", json.dumps(payload["collaborative_source"]), flush=True)
    for kind in kinds:
        ids = content_ids if kind == "content" else semantic_ids(vectors[kind], args.levels, args.codebook)[0]
        model, history, seconds = train_tiger(split, ids, args, valid)
        payload["ids"][kind] = {
            "ids": id_stats(ids, args.levels), "train_seconds": round(seconds, 1),
            "best_epoch": history[0]["best_epoch"], "epochs_run": history[-1]["epoch"],
            "curve": [(h["epoch"], h["seconds"], round(h["valid_ndcg@10"], 5)) for h in history],
            "test_masked": evaluate(model, test).metrics,
            "test_unmasked": evaluate(model, test, mask_history=False).metrics,
            "invalid_id_rate": model.evaluation_report()["invalid_rate"], "load_average": os.getloadavg()}
        print(kind, json.dumps({k: v for k, v in payload["ids"][kind].items() if k != "curve"}), flush=True)
        write_result(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
