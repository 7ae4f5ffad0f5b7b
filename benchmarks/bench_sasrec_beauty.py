"""SASRec on Amazon Beauty: seerec's SASRec (CE) against cornac 3.0.1's SASRec, same split, same run.

Protocol (the GUIDE's): leave-one-out per user (last item test, second-to-last validation), full ranking
over all 12,101 items, Recall@10 and NDCG@10. Every model is tuned / early-stopped on validation NDCG@10
(history masked) and reported on test, with history masked and unmasked. Both libraries are evaluated by
the same seerec code (`recommenders.evaluate`), cornac through its own batched `SASRecModel.predict`.
Wall time is measured from the start of training to the end of the best validation epoch, including the
per-epoch validation passes (the same evaluation code for both).

Optionally (`--content`), seerec's SASRec with content: the MiniLM vectors of each item's text (brand +
categories, cached by bench_semantic_ids.py in benchmarks/.cache/beauty-minilm.npy) fused with ID
embeddings, against ID-only SASRec.

    .venv/bin/pip install -e '.[bench]'     # cornac
    .venv/bin/python benchmarks/bench_sasrec_beauty.py [--epochs 100] [--cornac-epochs 15] [--content]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BEAUTY_SASREC, REPO, add_loop_arguments, write_result  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from recommenders.data import leave_one_out, load_interactions  # noqa: E402
from recommenders.evaluate import evaluate, evaluate_scores, pad_histories  # noqa: E402
from recommenders.train import build_model, fit  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "amazon-beauty"
OUT = REPO / "benchmarks" / "results" / "sasrec_beauty.json"
CACHE = REPO / "benchmarks" / ".cache" / "beauty-minilm.npy"


def seerec_run(split, model: str, hparams: dict, train: dict, features=None) -> dict:
    tcfg = validate_config({"train": {"model": model, model: hparams, "progress": False, **train}}).train
    net = build_model(tcfg, split.n_users, split.n_items, features)
    started = time.perf_counter()
    history = fit(net, split, tcfg)
    seconds = time.perf_counter() - started
    return {"library": "seerec", "model": model, "hparams": hparams, "train": train,
            "valid": evaluate(net, split.valid).metrics, "test_masked": evaluate(net, split.test).metrics,
            "test_unmasked": evaluate(net, split.test, mask_history=False).metrics,
            "best_epoch": history[0]["best_epoch"], "epochs_run": history[-1]["epoch"],
            "seconds_to_best": history[0]["seconds_to_best"], "seconds_total": round(seconds, 1),
            "curve": [(h["epoch"], h["seconds"], round(h["valid_ndcg@10"], 5)) for h in history]}


def cornac_run(split, data, epochs: int, device: str, seed: int = 0) -> dict:
    """cornac's SASRec with its defaults (CE over 2,048 sampled negatives, dim 100, 2 blocks), validated
    after every epoch by seerec's evaluation; the best epoch's weights are kept."""
    from collections import OrderedDict

    import cornac
    import cornac.models.sasrec.recom_sasrec as recom
    from cornac.data import SequentialDataset

    rows = [(str(u), str(u), str(i), t) for u, seq in enumerate(split.train) for t, i in enumerate(seq)]
    iid_map = OrderedDict((str(i), i) for i in range(split.n_items))  # cornac's item index = ours
    uid_map, sid_map = OrderedDict(), OrderedDict()
    train_set = SequentialDataset.build(rows, fmt="USIT", global_uid_map=uid_map, global_iid_map=iid_map,
                                        global_sid_map=sid_map, seed=seed)
    model = cornac.models.SASRec(n_epochs=epochs, device=device, seed=seed, verbose=False)

    def score(users, histories):
        seqs = pad_histories(histories, model.max_len, pad=model.pad_idx)
        if seqs.shape[1] < model.max_len:  # cornac trains on exactly max_len columns (positions from the left)
            fill = torch.full((len(seqs), model.max_len - seqs.shape[1]), model.pad_idx, dtype=torch.long)
            seqs = torch.cat([fill, seqs], dim=1)
        seqs = seqs.to(device)
        with torch.no_grad():
            model.model.eval()
            hidden = model.model._encode(seqs)
            items = torch.arange(model.model.item_num, device=device)
            out = model.model._score_items(hidden, model.model.item_emb(items), None)
        model.model.train()
        return out.reshape(len(histories), -1)

    state = {"best": -1.0, "epoch": 0, "seconds": 0.0, "weights": None, "curve": []}
    started = time.perf_counter()

    class Epochs:  # stands in for cornac's trange: validates after every epoch with seerec's evaluation
        def __init__(self, start, stop, disable=True):
            self.range = range(start, stop)

        def __iter__(self):
            for epoch in self.range:
                yield epoch
                ndcg = evaluate_scores(score, split.valid, device=device, batch_size=1024).metrics["ndcg@10"]
                seconds = time.perf_counter() - started
                state["curve"].append((epoch, round(seconds, 1), round(ndcg, 5)))
                if ndcg > state["best"]:
                    state.update(best=ndcg, epoch=epoch, seconds=seconds,
                                 weights={k: v.detach().clone() for k, v in model.model.state_dict().items()})

        def set_postfix(self, **kwargs):
            pass

    recom.trange = Epochs
    model.fit(train_set)
    total = time.perf_counter() - started
    model.model.load_state_dict(state["weights"])
    assert model.model.item_num == split.n_items

    def result(eval_set, mask):
        return evaluate_scores(score, eval_set, mask_history=mask, device=device).metrics

    return {"library": f"cornac {cornac.__version__}", "model": "SASRec",
            "hparams": {"embedding_dim": model.embedding_dim, "loss": model.loss, "n_sample": model.n_sample,
                        "num_blocks": model.num_blocks, "num_heads": model.num_heads, "dropout": model.dropout,
                        "batch_size": model.batch_size, "lr": model.learning_rate, "max_len": model.max_len},
            "valid": result(split.valid, True), "test_masked": result(split.test, True),
            "test_unmasked": result(split.test, False), "best_epoch": state["epoch"], "epochs_run": epochs,
            "seconds_to_best": round(state["seconds"], 1), "seconds_total": round(total, 1), "curve": state["curve"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_loop_arguments(parser, epochs=100, patience=8)
    parser.add_argument("--cornac-epochs", type=int, default=15)
    parser.add_argument("--no-cornac", action="store_true")
    parser.add_argument("--content", action="store_true")
    parser.add_argument("--grid", default="0.2,0.5",
                        help="configurations tuned on validation: dropout[:batch_size[:lr[:hidden]]], comma-separated")
    parser.add_argument("--warmup", action="store_true",
                        help="start CUDA (context, kernels) before any timed run, so no run pays for it")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order of seerec's runs")
    parser.add_argument("--users", type=int, default=None, help="subsample users (smoke tests only)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--data", default=str(DATA / "Beauty.txt"))
    parser.add_argument("--vectors", default=str(CACHE), help="MiniLM vectors of the items, in item-id order")
    parser.add_argument("--budget", type=float, default=1e9, help="seconds after which later phases are skipped")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_interactions(args.data)
    if args.users:
        data.sequences, data.user_ids = data.sequences[:args.users], data.user_ids[:args.users]
    split = leave_one_out(data)
    print(f"Beauty: {data.n_users} users, {data.n_items} items, {data.n_interactions} interactions; {device}",
          flush=True)
    train = {"epochs": args.epochs, "patience": args.patience, "batch_size": 128, "lr": args.lr, "seed": args.seed,
             "eval_batch_size": 2048, "lr_plateau_factor": args.lr_plateau_factor}
    payload = {"dataset": "amazon-beauty", "split": "leave-one-out", "device": device,
               "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "selection": "best validation NDCG@10 (history masked)", "cpu_threads": torch.get_num_threads(),
               "load_average_start": os.getloadavg(), "runs": []}

    def save():
        payload["load_average_now"] = os.getloadavg()
        write_result(args.out, copy.deepcopy(payload))

    started = time.perf_counter()

    def report(run: dict) -> None:
        payload["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
        save()

    def sasrec(spec: str) -> None:
        dropout, batch, lr, hidden = ([*spec.split(":"), None, None, None])[:4]
        settings = {**train, "batch_size": int(batch or train["batch_size"]), "lr": float(lr or train["lr"])}
        hparams = {**BEAUTY_SASREC, "hidden": int(hidden or BEAUTY_SASREC["hidden"]), "dropout": float(dropout),
                   "length_buckets": True}
        report(seerec_run(split, "sasrec", hparams, settings))

    if args.warmup and device == "cuda":
        warm = seerec_run(split, "sasrec", {"hidden": 64, "max_len": 50}, {**train, "epochs": 1})
        payload["warmup_seconds"] = warm["seconds_total"]
        started = time.perf_counter()
    grid = args.grid.split(",")
    sasrec(grid[0])
    if not args.no_cornac:
        report(cornac_run(split, data, args.cornac_epochs, device))
    for spec in grid[1:]:
        if time.perf_counter() - started > args.budget:
            print(f"skipping {spec}: past the {args.budget}s budget", flush=True)
            continue
        sasrec(spec)
    best = max((r for r in payload["runs"] if r["model"] == "sasrec"), key=lambda r: r["valid"]["ndcg@10"])
    payload["seerec_best"] = {**best["hparams"], **best["train"]}
    save()
    vectors_path = Path(args.vectors)
    if args.content and vectors_path.is_file() and time.perf_counter() - started < args.budget:
        vectors = np.load(vectors_path)
        assert len(vectors) == data.n_items and list(data.item_ids) == [str(i) for i in range(1, data.n_items + 1)]
        report(seerec_run(split, "sasrec_content", {**best["hparams"], "id_embedding": True}, best["train"],
                          vectors))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
