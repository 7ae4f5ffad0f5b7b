"""seerec's TIGER against cornac's TIGER on Amazon Beauty: same split, same semantic IDs, same budget, same run.

- Split: seerec's leave-one-out; cornac trains on the same training sequences (one session per user, item
  indexes equal to ours). Both are scored by seerec's full-ranking evaluation (`recommenders.evaluate`),
  history masked and unmasked, from one beam-20 pass per user.
- Semantic IDs: rkmeans 3 x 256 over the cached MiniLM vectors plus a dedup level, made once; cornac's
  tokenizer step is replaced by these codes, and its own dedup level comes out identical (checked).
- Architecture: the same size for both, `--size paper` (TIGER's: d_model 128, 4 + 4 layers, 4 heads of 32,
  ff 1024) or `--size cpu` (d_model 64, 2 + 2 layers, 4 heads of 16, ff 256, as bench_tiger_ids trains);
  dropout 0.1, 20 history items, Adam(W), batch 256, constant lr (`--lr`).
- Budget: each library trains for the same seconds of optimisation steps (`--budget-s`), single process, on
  this CPU; the last weights are evaluated (no model selection for either).
- Latency: per-user constrained beam search at equal beam width on the CPU, on the same test users, with 1
  thread and with the default threads; batch 1, and for seerec also 256 users per call (cornac's beam search
  takes one history per call, so it has no batched figure). The quality pass runs on 1 thread for both.

    .venv/bin/python benchmarks/bench_tiger_peer.py [--size cpu] [--budget-s 600] [--eval-users N]
        [--users N (smoke only)]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402
from benchmarks.generative import (  # noqa: E402
    HISTORY_ITEMS,
    TIGER_SIZES,
    BudgetSpent,
    StepBudget,
    add_common_arguments,
    beam_latency,
    beauty,
    fit_within_budget,
    subset,
)
from pipeline.config import validate_config  # noqa: E402
from recommenders.data import EvalSet  # noqa: E402
from recommenders.evaluate import evaluate_scores  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "tiger_peer.json"


def steps_per_epoch(split, batch_size: int) -> int:
    """Both loops make one example per position after the first of each training sequence."""
    examples = sum(max(0, len(s) - 1) for s in split.train)
    return -(-examples // batch_size)


def train_seerec(split, ids: np.ndarray, args) -> tuple[object, StepBudget]:
    """seerec's TIGER through the shared loop, stopped by the budget (its per-epoch validation runs on 256
    users only, and is not counted)."""
    tiger = {**TIGER_SIZES[args.size], "codebook_size": int(ids.max()) + 1, "max_items": HISTORY_ITEMS,
             "beam_size": args.beam}
    tcfg = validate_config({"train": {"model": "tiger", "tiger": tiger, "epochs": 10 ** 6, "patience": 10 ** 6,
                                      "progress": False, "batch_size": args.batch_size, "lr": args.lr,
                                      "device": "cpu", "seed": 0}}).train
    return fit_within_budget(tcfg, split, ids, args.budget_s, valid_users=256)


def train_cornac(split, ids: np.ndarray, vectors: np.ndarray, args) -> tuple[object, StepBudget]:
    """cornac's TIGER on our training sequences and our semantic IDs, stopped by the budget."""
    import cornac
    import cornac.models.tiger.recom_tiger as recom
    from cornac.data import SequentialDataset

    rows = [(str(u), str(u), str(i), t) for u, seq in enumerate(split.train) for t, i in enumerate(seq)]
    iid_map = OrderedDict((str(i), i) for i in range(split.n_items))  # cornac's item index = ours
    train_set = SequentialDataset.build(rows, fmt="USIT", global_uid_map=OrderedDict(), global_iid_map=iid_map,
                                        global_sid_map=OrderedDict(), seed=0)
    arch = TIGER_SIZES[args.size]
    model = cornac.models.TIGER(tokenizer="rkmeans", rqvae_num_levels=args.levels, rqvae_codebook_size=args.codebook,
                                d_model=arch["d_model"], d_ff=arch["ff"], num_heads=arch["heads"],
                                d_kv=arch["d_model"] // arch["heads"], num_enc_layers=arch["encoder_layers"],
                                num_dec_layers=arch["decoder_layers"], dropout=arch["dropout"],
                                max_len=HISTORY_ITEMS, n_epochs=10 ** 6,
                                learning_rate=args.lr, batch_size=args.batch_size, model_selection="last",
                                n_beams=args.beam, device="cpu", seed=0)
    model._get_item_features = lambda: vectors  # only its shape is used once the tokenizer is replaced
    model._tokenize = lambda torch_module, feats: ids[:, :args.levels]
    budget, iterate = StepBudget(args.budget_s), recom.session_seq_iter
    recom.session_seq_iter = lambda *a, **k: budget.wrap(iterate(*a, **k))
    try:
        model.fit(train_set)
    except BudgetSpent:
        pass
    finally:
        recom.session_seq_iter = iterate
    assert model.total_items == split.n_items and np.array_equal(model.sid_table, ids), "IDs differ from seerec's"
    model.model.eval()
    return model, budget


def seerec_beam(model, beam: int):
    def run(users, histories):
        items, scores = model.beam_search(torch.as_tensor(users), histories, beam)
        return items.numpy(), scores.numpy()
    return run


def cornac_beam(model, beam: int):
    """cornac's own per-history path (as in its `score`): pad the last max_len items, generate, map IDs."""
    def run(users, histories):
        items = np.full((len(histories), beam), -1, np.int64)
        scores = np.full((len(histories), beam), -np.inf, np.float32)
        for row, history in enumerate(histories):
            hist = list(history[-model.max_len:])
            hist = [model.pad_idx] * (model.max_len - len(hist)) + hist
            tokens = torch.as_tensor(model.enc_token_table[hist].reshape(1, -1))
            with torch.no_grad():
                sids, logps = model.model.generate_beam(tokens, (tokens != 0).float(), beam, model.prefix_children)
            items[row, :len(sids)] = [model.sid_to_item.get(s, -1) for s in sids]
            scores[row, :len(sids)] = logps
        return items, scores
    return run


def quality(beam_fn, eval_set: EvalSet, n_users: int, n_items: int, batch: int = 512) -> dict:
    """One beam pass over eval_set, then full-ranking metrics with history masked and unmasked, and the share
    of generated beams that name no catalog item."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the faster setting for both here (see the latency rows)
    started = time.perf_counter()
    parts = [beam_fn(eval_set.users[s:s + batch], eval_set.histories[s:s + batch])
             for s in range(0, len(eval_set), batch)]
    items, scores = (np.concatenate(p) for p in zip(*parts, strict=True))
    seconds = time.perf_counter() - started
    torch.set_num_threads(threads)
    row_of = np.full(n_users, -1)
    row_of[eval_set.users] = np.arange(len(eval_set))

    def score(users, histories):
        rows = row_of[users.numpy()]
        out = torch.full((len(rows), n_items), -torch.inf)
        chosen, found = items[rows], torch.as_tensor(np.isfinite(scores[rows]) & (items[rows] >= 0))
        r, c = torch.nonzero(found, as_tuple=True)
        out[r, torch.as_tensor(chosen)[r, c]] = torch.as_tensor(scores[rows])[r, c]
        return out

    generated = np.isfinite(scores)
    return {"users": len(eval_set), "beam_pass_s": round(seconds, 1),
            "test_masked": evaluate_scores(score, eval_set).metrics,
            "test_unmasked": evaluate_scores(score, eval_set, mask_history=False).metrics,
            "invalid_id_rate": float((generated & (items < 0)).sum() / max(1, generated.sum()))}


def latencies(beam_fn, split, args, batch: int | None) -> list[dict]:
    users, histories = split.test.users, split.test.histories
    return [beam_latency(beam_fn, users, histories, args.beam, threads, n=args.latency_users, batch=batch)
            for threads in sorted({1, torch.get_num_threads()})]


def ratios(seerec: dict, peer: dict) -> dict:
    """peer / seerec for times (above 1: seerec is faster), seerec / peer for quality (above 1: seerec better)."""
    out = {"s_per_step": round(peer["train"]["s_per_step_mean"] / seerec["train"]["s_per_step_mean"], 2)}
    for mine, theirs in zip(seerec["latency_cpu"], peer["latency_cpu"], strict=True):
        for key in mine:
            if key.startswith("ms_") and key in theirs:
                out[f"{key}_threads{mine['threads']}"] = round(theirs[key] / mine[key], 2)
    for masking in ("test_masked", "test_unmasked"):
        for metric, value in seerec[masking].items():
            if metric.endswith(("@5", "@10")) and peer[masking][metric] > 0:
                out[f"{masking}_{metric}"] = round(value / peer[masking][metric], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=600, help="seconds of training steps for each library")
    parser.add_argument("--size", choices=sorted(TIGER_SIZES), default="paper", help="the same for both libraries")
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--eval-users", type=int, default=None, help="a fixed random subset of test users (both)")
    parser.add_argument("--latency-users", type=int, default=64)
    add_common_arguments(parser, OUT, lr=1e-3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, split, vectors, ids, id_seconds = beauty(args.users, args.levels, args.codebook)
    test = subset(split.test, args.eval_users)
    per_epoch = steps_per_epoch(split, args.batch_size)
    print(f"Beauty: {data.n_users} users, {data.n_items} items; IDs {ids.shape} in {id_seconds:.0f}s; "
          f"{per_epoch} steps per epoch; {torch.get_num_threads()} CPU threads", flush=True)
    payload = {"dataset": "amazon-beauty", "split": "leave-one-out", "users": data.n_users, "device": "cpu",
               "threads_default": torch.get_num_threads(), "beam": args.beam,
               "architecture": {"size": args.size, **TIGER_SIZES[args.size], "history_items": HISTORY_ITEMS},
               "budget": "equal seconds of training steps per library; last weights evaluated",
               "semantic_ids": {"tokenizer": "rkmeans", "levels": args.levels, "codebook": args.codebook,
                                "dedup": "append (counter)", "shared_by_both": True},
               "optimiser": {"seerec": "Adam", "cornac": "AdamW (weight decay 1e-4, its default)", "lr": args.lr,
                             "batch_size": args.batch_size}}
    trainers = {"seerec": lambda: train_seerec(split, ids, args),
                "cornac": lambda: train_cornac(split, ids, vectors, args)}
    beams = {"seerec": seerec_beam, "cornac": cornac_beam}
    batched = {"seerec": 256, "cornac": None}  # cornac's beam search takes one history per call
    for name, trainer in trainers.items():
        model, budget = trainer()
        net = model if name == "seerec" else model.model
        beam_fn = beams[name](model, args.beam)
        payload[name] = {"parameters": sum(p.numel() for p in net.parameters()),
                         "train": budget.report(per_epoch), **quality(beam_fn, test, split.n_users, split.n_items),
                         "latency_cpu": latencies(beam_fn, split, args, batched[name]),
                         "load_average": os.getloadavg()}
        print(name, json.dumps(payload[name]), flush=True)
        write_result(args.out, payload)
    import cornac

    payload["cornac"]["library"] = f"cornac {cornac.__version__}"
    payload["ratios"] = ratios(payload["seerec"], payload["cornac"])
    write_result(args.out, payload)
    print("ratios", json.dumps(payload["ratios"], indent=1), flush=True)


if __name__ == "__main__":
    main()
