"""Helpers shared by the generative-recommender benchmarks: semantic IDs from cached text vectors, a training
budget that two libraries' loops can share, and beam-search latency per user."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO
from extractors.semantic_ids import make_tokenizer, resolve
from recommenders.data import EvalSet, Split, leave_one_out, load_interactions
from recommenders.generative.tiger import TigerConfig
from recommenders.train import build_model, fit

DATA = REPO.parent / "shared" / "data" / "amazon-beauty"
CACHE = REPO / "benchmarks" / ".cache" / "beauty-minilm.npy"
# TIGER sizes, in train.tiger keys: "paper" is seerec's default (TIGER's published size, with 4 heads of 32),
# "cpu" the smaller model that trains on Beauty in about half an hour on 2 CPU cores. Both read the default
# number of history items.
_TIGER_DEFAULTS = TigerConfig()
TIGER_SIZES = {
    "paper": {key: getattr(_TIGER_DEFAULTS, key)
              for key in ("d_model", "encoder_layers", "decoder_layers", "heads", "ff", "dropout")},
    "cpu": {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "heads": 4, "ff": 256, "dropout": 0.1},
}
HISTORY_ITEMS = _TIGER_DEFAULTS.max_items


def beauty(users: int | None, levels: int, codebook: int) -> tuple[object, Split, np.ndarray, np.ndarray, float]:
    """Amazon Beauty (optionally its first `users` users, for smoke runs), its leave-one-out split, the
    cached MiniLM text vectors of its items, and their semantic IDs with the seconds these took."""
    data = load_interactions(DATA / "Beauty.txt")
    if users:
        data.sequences, data.user_ids = data.sequences[:users], data.user_ids[:users]
    split = leave_one_out(data)
    vectors = np.load(CACHE)
    assert len(vectors) == data.n_items and list(data.item_ids) == [str(i) for i in range(1, data.n_items + 1)]
    ids, seconds = semantic_ids(vectors, levels, codebook)
    return data, split, vectors, ids, seconds


def semantic_ids(vectors: np.ndarray, levels: int, codebook: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """rkmeans codes plus an append-dedup level (a counter per shared tuple), and the seconds it took."""
    started = time.perf_counter()
    tokenizer = make_tokenizer("rkmeans", levels=levels, codebook_size=codebook, preprocess="l2", seed=seed)
    tokenizer.fit(vectors)
    ids = resolve(tokenizer.encode(vectors), "append").astype(np.int64)
    return ids, time.perf_counter() - started


def add_common_arguments(parser: argparse.ArgumentParser, out: Path, lr: float) -> None:
    """The options every TIGER benchmark takes: optimiser batch and lr, tokenizer shape, smoke subsample, output."""
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--users", type=int, default=None, help="subsample users (smoke tests only)")
    parser.add_argument("--out", default=str(out))


def loop_settings(args: argparse.Namespace) -> dict:
    """The train.* settings of the shared loop that add_common_arguments and common.add_loop_arguments give."""
    return {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "lr": args.lr,
            "lr_plateau_factor": args.lr_plateau_factor}


def subset(eval_set: EvalSet, n: int | None, seed: int = 0) -> EvalSet:
    """A fixed random subset of n users (all if n is None), in their original order."""
    if n is None or n >= len(eval_set):
        return eval_set
    keep = np.sort(np.random.default_rng(seed).choice(len(eval_set), n, replace=False))
    return EvalSet(eval_set.users[keep], eval_set.targets[keep], [eval_set.histories[i] for i in keep])


class BudgetSpent(Exception):
    """Raised out of a training loop once its step budget is used up; the model keeps its last weights."""


class StepBudget:
    """Caps training at `seconds` of step time (making the batch, forward, backward, update), summed over
    epochs. Time between epochs (a loop's own validation) is not counted, so two libraries whose loops do
    different work between epochs get the same compute for their optimisation steps."""

    def __init__(self, seconds: float):
        self.seconds, self.spent, self.steps, self.step_seconds = seconds, 0.0, 0, []

    def wrap(self, batches: Iterable) -> Iterator:
        """Yield the loop's batches until the budget is spent, then raise BudgetSpent."""
        last = time.perf_counter()
        for batch in batches:
            yield batch
            now = time.perf_counter()
            self.step_seconds.append(now - last)
            self.spent, self.steps, last = self.spent + now - last, self.steps + 1, now
            if self.spent >= self.seconds:
                raise BudgetSpent

    def report(self, steps_per_epoch: int) -> dict:
        median = float(np.median(self.step_seconds)) if self.step_seconds else float("nan")
        return {"budget_s": self.seconds, "train_s": round(self.spent, 1), "steps": self.steps,
                "epochs": round(self.steps / steps_per_epoch, 3), "steps_per_epoch": steps_per_epoch,
                "s_per_step_mean": round(self.spent / max(1, self.steps), 3), "s_per_step_median": round(median, 3),
                "s_per_epoch": round(self.spent / max(1, self.steps) * steps_per_epoch, 1)}


def fit_within_budget(tcfg, split: Split, ids: np.ndarray, budget_s: float, valid_users: int):
    """seerec's model built from `tcfg` and trained by its own loop for `budget_s` seconds of steps (validation
    on a fixed subset of `valid_users`); (the model in eval mode with its last weights, the budget's record)."""
    model = build_model(tcfg, split.n_users, split.n_items, ids)
    budget, batches = StepBudget(budget_s), model.batches
    model.batches = lambda train, batch_size, rng: budget.wrap(batches(train, batch_size, rng))
    with contextlib.suppress(BudgetSpent):
        fit(model, replace(split, valid=subset(split.valid, valid_users)), tcfg)
    return model.eval(), budget


def beam_latency(beam_fn: Callable[[np.ndarray, list], object], users: np.ndarray, histories: list, beam: int,
                 threads: int, n: int = 64, batch: int | None = 256) -> dict:
    """Milliseconds per user of `beam_fn(users, histories)` on the CPU with `threads` threads: one user per call
    (n users), and, if batch, `batch` users in one call. The thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        for i in range(n):
            beam_fn(users[i:i + 1], histories[i:i + 1])
        single = (time.perf_counter() - started) / n
        out = {"beam": beam, "threads": threads, "ms_per_user_batch1": round(1000 * single, 2)}
        if batch:
            batch = min(batch, len(histories))
            started = time.perf_counter()
            beam_fn(users[:batch], histories[:batch])
            out[f"ms_per_user_batch{batch}"] = round(1000 * (time.perf_counter() - started) / batch, 2)
        return out
    finally:
        torch.set_num_threads(before)
