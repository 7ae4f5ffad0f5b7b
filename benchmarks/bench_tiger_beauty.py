"""seerec's generative recommender (TIGER) on Amazon Beauty, against TIGER's published numbers.

Semantic IDs: rkmeans 3 x 256 (+ append dedup level) over the MiniLM text vectors of the items (brand +
categories), cached by bench_semantic_ids.py in benchmarks/.cache/beauty-minilm.npy. Split: leave-one-out,
full ranking, history masked (unmasked reported too). Selection: best validation NDCG@10 (early stopping in
the shared loop). Reports Recall/NDCG@5/10 on test next to TIGER's .0454/.0648 (Recall@5/10) and .0321/.0384
(NDCG@5/10), the training budget (epochs, seconds, device), the invalid-ID rate, and the per-user inference
latency at beam 20 on CPU (batch 1, and amortised over a batch of 256 users).

    .venv/bin/python benchmarks/bench_tiger_beauty.py [--epochs 200] [--users 2000 (smoke only)]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, add_loop_arguments, write_result  # noqa: E402
from benchmarks.generative import add_common_arguments, beam_latency, beauty, loop_settings  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from recommenders.evaluate import evaluate  # noqa: E402
from recommenders.train import build_model, fit  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "tiger_beauty.json"
PUBLISHED = {"recall@5": 0.0454, "recall@10": 0.0648, "ndcg@5": 0.0321, "ndcg@10": 0.0384}


def latency(model, split, beam: int) -> dict:
    """Constrained beam search on the CPU, one core per request (as a server would run it, and no spin-waits
    on a busy machine)."""
    model = model.cpu().eval()
    return beam_latency(lambda users, histories: model.beam_search(torch.as_tensor(users), histories, beam),
                        split.test.users, split.test.histories, beam, threads=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_loop_arguments(parser, epochs=200, patience=10)
    parser.add_argument("--tiger", default="{}", help='JSON overrides of train.tiger, e.g. \'{"d_model": 64}\'')
    parser.add_argument("--cpu-threads", type=int, default=None)
    add_common_arguments(parser, OUT, lr=1e-3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data, split, _, ids, id_seconds = beauty(args.users, args.levels, args.codebook)
    print(f"Beauty: {data.n_users} users, {data.n_items} items; IDs {ids.shape[1]} codes in {id_seconds:.0f}s; "
          f"{device}", flush=True)
    tiger = {"codebook_size": int(ids.max()) + 1, **json.loads(args.tiger)}
    tcfg = validate_config({"train": {"model": "tiger", "tiger": tiger, **loop_settings(args), "progress": False,
                                      "eval_batch_size": 1024, "cpu_threads": args.cpu_threads}}).train
    model = build_model(tcfg, split.n_users, split.n_items, ids)
    started = time.perf_counter()
    history = fit(model, split, tcfg)
    seconds = time.perf_counter() - started
    test = evaluate(model, split.test).metrics
    decoding = model.evaluation_report()
    result = {
        "dataset": "amazon-beauty", "split": "leave-one-out", "users": data.n_users, "device": device,
        "semantic_ids": {"tokenizer": "rkmeans", "levels": args.levels, "codebook": args.codebook,
                         "dedup": "append", "input": "MiniLM of brand + categories", "seconds": round(id_seconds, 1)},
        "hparams": model.config.model_dump(), "train": loop_settings(args),
        "valid": evaluate(model, split.valid).metrics, "test_masked": test,
        "test_unmasked": evaluate(model, split.test, mask_history=False).metrics,
        "published_tiger": PUBLISHED, "decoding": decoding,
        "best_epoch": history[0]["best_epoch"], "epochs_run": history[-1]["epoch"],
        "seconds_to_best": history[0]["seconds_to_best"], "seconds_total": round(seconds, 1),
        "curve": [(h["epoch"], h["seconds"], round(h["valid_ndcg@10"], 5)) for h in history],
        "latency_cpu": latency(model, split, 20),
    }
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve", "hparams")}, indent=1), flush=True)


if __name__ == "__main__":
    main()
