"""seerec's RPG against cornac 3.0.1's RPG on Amazon Beauty: same split, same item vectors, same budget, one run.

(`--dataset scientific --skip-cornac`: seerec's RPG alone with the same settings on Amazon Scientific, whose item
text is title + description.)

- Split: seerec's leave-one-out; cornac trains on the same training sequences (one session per user, item
  indexes equal to ours). Both are ranked by seerec's full-ranking evaluation (`recommenders.evaluate`) on the
  same fixed random test users, history unmasked (the generative literature's protocol) and masked.
- Item vectors: the cached MiniLM vectors of brand + categories (`--ids content`; only 3,192 distinct texts for
  12,101 items), or those joined with `--svd-dim` (64) item factors of a truncated SVD of the training user-item
  matrix (`--ids hybrid`, default; each part scaled to unit rows), or the item factors alone
  (`--ids collaborative`). Each library quantizes them with its own OPQ into `--levels` digits of 256 codes:
  seerec's `quantize.tokenizer=opq` (numpy k-means, plus the append dedup digit), cornac's faiss
  `OPQ{M},IVF1,PQ{M}x8` (no dedup: items with one vector share one ID).
- Architecture: the same size for both: `--hidden` wide, `--layers` layers, `--heads` heads, feed-forward as
  wide as the model (SASRec's block), dropout `--dropout` (cornac: embedding and attention dropout), 50 history
  items, temperature `--temperature`, batch 256, Adam(W) at `--lr`, constant.
- Budget: each library trains for the same seconds of optimisation steps (`--budget-s`), 1 CPU thread each
  (the machine is shared), and both are evaluated with their last weights (the budget stops seerec's loop
  mid-epoch, before it would restore its best epoch; cornac: `model_selection="last"`). seerec's loop still
  logs validation NDCG@10 (unmasked, 2,000 validation users, not counted in the budget) after every epoch.
- Latency: ms per user to produce 20 candidates on 1 CPU thread: seerec's graph walk (beam 20) and exact
  scoring, 256 users per call and 1 user per call; cornac's `score` takes one history per call.

    .venv/bin/python benchmarks/bench_rpg_beauty.py [--budget-s 420] [--ids hybrid] [--eval-users 5000]
        [--users N (smoke only)] [--skip-cornac] [--threads 1]
    .venv/bin/python benchmarks/bench_rpg_beauty.py --skip-cornac --time-limit-s 3540 [--ids collaborative]
        [--svd-dim 128] [--patience 10] [--lr-plateau-factor 0.5]   # seerec alone: the best epoch within an hour
    .venv/bin/python benchmarks/bench_rpg_beauty.py --dataset scientific --skip-cornac --time-limit-s 900
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402
from benchmarks.generative import CACHE, DATA, BudgetSpent, StepBudget, beam_latency, fit_within_budget, subset  # noqa: E402
from extractors.semantic_ids import concat_columns, make_tokenizer, resolve  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from recommenders.data import leave_one_out, load_interactions  # noqa: E402
from recommenders.evaluate import evaluate, evaluate_scores  # noqa: E402
from recommenders.train import build_model, fit  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "rpg_beauty.json"
PUBLISHED_UNMASKED = {"tiger": {"recall@10": 0.0648, "ndcg@10": 0.0384},
                      "rpg": {"recall@10": 0.0809, "ndcg@10": 0.0464},
                      "cornac_rpg_reported": {"recall@10": 0.0789, "ndcg@10": 0.0454}}
CANDIDATES = 20


def dataset(name: str):
    """A data set's interactions and its items' MiniLM text vectors (row i = item index i): Beauty's brand +
    categories, Scientific's title + description (bench_semantic_ids.py's cache, embedded on first use)."""
    from benchmarks.bench_recommenders_scientific import DATA as SCIENTIFIC
    from benchmarks.bench_semantic_ids import texts, vectors

    text = vectors(name, texts(name))
    if name == "beauty":
        return load_interactions(DATA / "Beauty.txt"), text
    return load_interactions(SCIENTIFIC, item_universe=[str(i) for i in range(len(text))]), text


def item_vectors(split, text: np.ndarray, kind: str, dim: int = 64) -> np.ndarray:
    """The text vectors (content), SVD item factors of the training interactions (collaborative), or both
    joined with unit rows each (hybrid)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import svds

    if kind == "content":
        return text
    if kind == "sasrec":
        from benchmarks.bench_tiger_ids import collaborative_vectors

        return collaborative_vectors(split, epochs=15, lr=4e-3)[0]
    users = np.concatenate([np.full(len(s), u) for u, s in enumerate(split.train)])
    items = np.concatenate(split.train)
    matrix = csr_matrix((np.ones(len(items), np.float32), (users, items)), shape=(split.n_users, split.n_items))
    matrix.data[:] = 1.0  # repeated interactions count once
    _, sigma, vt = svds(matrix, k=dim, random_state=0)
    factors = (vt.T * np.sqrt(sigma)).astype(np.float32)
    return concat_columns([factors] if kind == "collaborative" else [text, factors], unit_rows=True)


def seerec_ids(vectors: np.ndarray, levels: int, codebook: int, name: str = "beauty") -> tuple[np.ndarray, float]:
    """seerec's OPQ IDs plus the append dedup digit, and the seconds the fit took. Cached in benchmarks/.cache
    under a hash of the vectors and settings (a fit takes minutes on a loaded 2-core machine)."""
    key = hashlib.sha1(vectors.tobytes() + f"{levels}x{codebook}".encode()).hexdigest()[:12]
    path = CACHE.parent / f"{name}-opq-{key}.npz"
    if path.is_file():
        cached = np.load(path)
        return cached["ids"], float(cached["seconds"])
    started = time.perf_counter()
    tokenizer = make_tokenizer("opq", levels=levels, codebook_size=codebook, preprocess="l2", opq_iters=4,
                               max_iter=25).fit(vectors)
    ids = resolve(tokenizer.encode(vectors), "append").astype(np.int64)
    seconds = time.perf_counter() - started
    np.savez(path, ids=ids, seconds=seconds)
    return ids, seconds


def train_seerec(split, ids: np.ndarray, args) -> tuple[object, dict]:
    """seerec's RPG and its training record: stopped by the step budget with its last weights (the equal-budget
    comparison), or, with `--time-limit-s`, by the loop's own time limit keeping the best validation epoch."""
    rpg = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "dropout": args.dropout,
           "max_len": 50, "temperature": args.temperature, "beam_size": CANDIDATES, "graph_neighbors": 50,
           "objective": args.objective, "item_negatives": args.item_negatives}
    train = {"model": "rpg", "rpg": rpg, "epochs": 10 ** 6, "patience": 10 ** 6, "progress": False,
             "batch_size": args.batch_size, "lr": args.lr, "device": "cpu", "seed": 0, "cpu_threads": args.threads,
             "mask_history": False, "eval_batch_size": 1024, "lr_plateau_factor": args.lr_plateau_factor,
             "lr_schedule": args.lr_schedule}
    steps = -(-sum(1 for s in split.train if len(s) >= 2) // args.batch_size)
    if args.time_limit_s is None:
        model, budget = fit_within_budget(validate_config({"train": train}).train, split, ids, args.budget_s,
                                          valid_users=2000)
        return model, budget.report(steps)
    tcfg = validate_config({"train": {**train, "patience": args.patience, "time_limit_s": args.time_limit_s,
                                      "ema_decay": args.ema_decay}}).train
    model = build_model(tcfg, split.n_users, split.n_items, ids)
    history = fit(model, replace(split, valid=subset(split.valid, 2000)), tcfg)
    return model.eval(), {"time_limit_s": args.time_limit_s, "steps_per_epoch": steps, "epochs": history[-1]["epoch"],
                          "best_epoch": history[0]["best_epoch"], "seconds_to_best": history[0]["seconds_to_best"],
                          "seconds": history[-1]["seconds"], "history": history}


def train_cornac(split, vectors: np.ndarray, args) -> tuple[object, StepBudget, float]:
    """cornac's RPG on our training sequences and item vectors (its own OPQ), stopped by the budget."""
    import cornac
    import cornac.models.rpg.recom_rpg as recom
    from cornac.data import SequentialDataset

    rows = [(str(u), str(u), str(i), t) for u, seq in enumerate(split.train) for t, i in enumerate(seq)]
    iid_map = OrderedDict((str(i), i) for i in range(split.n_items))  # cornac's item index = ours
    train_set = SequentialDataset.build(rows, fmt="USIT", global_uid_map=OrderedDict(), global_iid_map=iid_map,
                                        global_sid_map=OrderedDict(), seed=0)
    model = cornac.models.RPG(n_codebook=args.levels, codebook_size=256, pca_dim=0, d_model=args.hidden,
                              n_layer=args.layers, n_head=args.heads, n_inner=args.hidden, resid_dropout=0.0,
                              embd_dropout=args.dropout, attn_dropout=args.dropout, temperature=args.temperature,
                              n_epochs=10 ** 6, learning_rate=args.lr, batch_size=args.batch_size,
                              model_selection="last", scoring="graph", n_beams=CANDIDATES, graph_edges=50,
                              device="cpu", seed=0)
    model._get_item_features = lambda: vectors  # what cornac reads from its evaluation's item modality
    tokenize, opq_seconds = model._opq_tokenize, []

    def timed_tokenize(*a, **k):
        started = time.perf_counter()
        out = tokenize(*a, **k)
        opq_seconds.append(time.perf_counter() - started)
        return out

    model._opq_tokenize = timed_tokenize
    budget, iterate = StepBudget(args.budget_s), recom._rpg_session_iter
    recom._rpg_session_iter = lambda *a, **k: budget.wrap(iterate(*a, **k))
    try:
        model.fit(train_set)
    except BudgetSpent:  # fit stops inside the loop: finish what it does after training
        model.model.eval()
        model.adjacency = model.model.build_adjacency(model.total_items, model.graph_edges, model.graph_chunk_size)
    finally:
        recom._rpg_session_iter = iterate
    model.model.to("cpu").eval()
    return model, budget, opq_seconds[0]


def cornac_rows(model) -> int:
    """Training rows per epoch of cornac's loop (a sliding window per long session)."""
    import cornac.models.rpg.recom_rpg as recom

    return recom._rpg_num_training_rows(model.train_set, model.max_len)


def cornac_scores(model, n_items: int):
    """cornac's per-history `score` for a batch of users, as a (B, n_items) matrix."""
    def run(users, histories):
        return torch.as_tensor(np.stack([model.score(int(u), list(h))[:n_items] for u, h in
                                         zip(users, histories, strict=True)]), dtype=torch.float32)
    return run


def quality(score_fn, eval_set) -> dict:
    started = time.perf_counter()
    out = {"unmasked": evaluate_scores(score_fn, eval_set, mask_history=False).metrics,
           "masked": evaluate_scores(score_fn, eval_set).metrics}
    return {**out, "seconds": round(time.perf_counter() - started, 1)}


def top_candidates(score_fn):
    return lambda users, histories: torch.topk(score_fn(torch.as_tensor(users), histories), CANDIDATES, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["beauty", "scientific"], default="beauty",
                        help="scientific: the same settings on Amazon Scientific (seerec only, with --skip-cornac)")
    parser.add_argument("--budget-s", type=float, default=420, help="seconds of training steps for each library")
    parser.add_argument("--ids", choices=["content", "collaborative", "hybrid", "sasrec"], default="hybrid",
                        help="sasrec: the item embeddings of an ID-only SASRec (bench_tiger_ids.py's, cached)")
    parser.add_argument("--svd-dim", type=int, default=64, help="item factors of the collaborative part")
    parser.add_argument("--levels", type=int, default=32)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--objective", choices=["digits", "digits+items"], default="digits+items",
                        help="seerec's loss (train.rpg.objective)")
    parser.add_argument("--item-negatives", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-users", type=int, default=5000, help="a fixed random subset of test users (both)")
    parser.add_argument("--latency-users", type=int, default=64)
    parser.add_argument("--users", type=int, default=None, help="subsample users (smoke tests only)")
    parser.add_argument("--skip-cornac", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training and evaluation")
    parser.add_argument("--time-limit-s", type=float, default=None,
                        help="seerec only (with --skip-cornac): train until the first epoch ending past this many "
                             "seconds, early stopping by --patience, and keep the best validation epoch")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr-plateau-factor", type=float, default=1.0)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="train.lr_schedule (cosine: to 0 over --time-limit-s)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="train.ema_decay (with --time-limit-s): validate and keep a moving average of the weights")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.dataset != "beauty" and not args.skip_cornac:
        parser.error("the cornac comparison runs on Beauty: add --skip-cornac for --dataset scientific")
    if args.time_limit_s is not None and not args.skip_cornac:
        parser.error("--time-limit-s trains seerec alone: add --skip-cornac (--budget-s is the equal-budget run)")
    if args.ema_decay is not None and args.time_limit_s is None:
        parser.error("--ema-decay applies to the --time-limit-s run (the --budget-s run keeps its last weights)")
    torch.set_num_threads(args.threads)
    data, text = dataset(args.dataset)
    if args.users:
        data.sequences, data.user_ids = data.sequences[:args.users], data.user_ids[:args.users]
    split = leave_one_out(data)
    vectors = item_vectors(split, text, args.ids, args.svd_dim)
    assert len(vectors) == split.n_items
    ids, id_seconds = seerec_ids(vectors, args.levels, args.codebook, args.dataset)
    test = subset(split.test, args.eval_users)
    print(f"{args.dataset}: {split.n_users} users, {split.n_items} items; {args.ids} vectors {vectors.shape}; "
          f"seerec IDs {ids.shape} ({len(np.unique(ids[:, :-1], axis=0))} distinct before dedup) in {id_seconds:.0f}s",
          flush=True)
    payload = {"dataset": f"amazon-{args.dataset}", "split": "leave-one-out", "users": split.n_users, "device": "cpu",
               "threads": args.threads, "eval_users": len(test), "candidates": CANDIDATES, "item_vectors": args.ids,
               "settings": {k: v for k, v in vars(args).items() if k not in ("out", "skip_cornac")},
               "budget": (f"seerec alone, the best validation epoch within {args.time_limit_s:.0f} s"
                          if args.time_limit_s else "equal seconds of training steps per library, 1 thread each"),
               "published_unmasked": PUBLISHED_UNMASKED}

    model, trained = train_seerec(split, ids, args)
    seerec = {"ids": {"digits": int(ids.shape[1]), "seconds": round(id_seconds, 1),
                      "distinct_before_dedup": int(len(np.unique(ids[:, :-1], axis=0)))},
              "parameters": sum(p.numel() for p in model.parameters()), "train": trained,
              "valid_unmasked": evaluate(model, subset(split.valid, 2000), mask_history=False).metrics,
              "exact": quality(model.score, test)}
    started = time.perf_counter()  # the code graph is built once, on first use; its neighbours come first
    seerec["graph"] = {"neighbors": int(model.graph.shape[1]), "build_s": round(time.perf_counter() - started, 1)}
    model.scoring, model.beam_size = "graph", 50
    seerec["graph_beam50"] = quality(model.score, test)
    model.beam_size = CANDIDATES
    seerec["latency_graph"] = beam_latency(top_candidates(model.score), test.users, test.histories, CANDIDATES,
                                           threads=1, n=args.latency_users)
    model.scoring = "exact"
    seerec["latency_exact"] = beam_latency(top_candidates(model.score), test.users, test.histories, CANDIDATES,
                                           threads=1, n=args.latency_users)
    seerec["load_average"] = os.getloadavg()
    payload["seerec"] = seerec
    print("seerec", json.dumps(seerec), flush=True)
    write_result(args.out, payload)
    if args.skip_cornac:
        return

    import cornac

    peer, budget, opq_seconds = train_cornac(split, vectors, args)
    score = cornac_scores(peer, split.n_items)
    cornac_out = {"library": f"cornac {cornac.__version__}", "ids": {"digits": args.levels,
                                                                    "seconds": round(opq_seconds, 1),
                                                                    "distinct": int(len(np.unique(peer.sid_table,
                                                                                                  axis=0)))},
                  "parameters": sum(p.numel() for p in peer.model.parameters()),
                  "train": budget.report(-(-cornac_rows(peer) // args.batch_size))}
    peer.n_beams = 50
    cornac_out["graph_beam50"] = quality(score, test)
    peer.scoring = "exact"
    cornac_out["exact"] = quality(score, test)
    peer.n_beams, peer.scoring = CANDIDATES, "graph"
    cornac_out["latency_graph"] = beam_latency(top_candidates(score), test.users, test.histories, CANDIDATES,
                                               threads=1, n=args.latency_users, batch=None)
    peer.scoring = "exact"
    cornac_out["latency_exact"] = beam_latency(top_candidates(score), test.users, test.histories, CANDIDATES,
                                               threads=1, n=args.latency_users, batch=None)
    cornac_out["load_average"] = os.getloadavg()
    payload["cornac"] = cornac_out
    ratios = {}
    for scoring in ("exact", "graph_beam50"):
        for masking in ("unmasked", "masked"):
            for metric in ("recall@10", "ndcg@10"):
                theirs = cornac_out[scoring][masking][metric]
                mine = seerec[scoring][masking][metric]
                ratios[f"{scoring}_{masking}_{metric}"] = round(mine / theirs, 2) if theirs else None
    for kind in ("latency_graph", "latency_exact"):
        ratios[f"{kind}_batch1"] = round(cornac_out[kind]["ms_per_user_batch1"] / seerec[kind]["ms_per_user_batch1"], 2)
    ratios["s_per_step"] = round(cornac_out["train"]["s_per_step_mean"] / seerec["train"]["s_per_step_mean"], 2)
    payload["ratios"] = ratios  # quality: seerec / cornac; times: cornac / seerec (above 1: seerec better)
    write_result(args.out, payload)
    print("cornac", json.dumps(cornac_out), "\nratios", json.dumps(ratios, indent=1), flush=True)


if __name__ == "__main__":
    main()
