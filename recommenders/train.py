"""The training loop shared by every model (nanoGPT's train.py, in spirit), local or on Ray Train workers.

`build_model(tcfg, ...)` makes the configured model from its config section, its weights seeded by
`tcfg.seed`. `fit(model, split, tcfg)` trains it: Adam over `model.batches`, validation NDCG@10 after every
epoch (the untrained model's is recorded, not counted as a best), a constant or cosine lr (`lr_schedule`)
cut on a plateau (`lr_plateau_factor`), early stopping after `patience` epochs without a new best, tqdm bars
with live loss and metrics, and the best epoch's weights loaded back at the end. With `ema_decay` the weights
validated, kept and returned are an exponential moving average of the trained ones.

On Ray Train workers (`recommenders.distributed`) the same `fit` runs with the worker's `rank` of `world`
and a `wrap` that turns the model into Ray Train's DistributedDataParallel module: each worker then steps
on every world-th user's sequence and DDP averages the gradients.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.config import TrainConfig
from recommenders.base import Recommender
from recommenders.data import Split
from recommenders.evaluate import evaluate
from recommenders.registry import model_class

log = logging.getLogger("seerec.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(tcfg: TrainConfig, n_users: int, n_items: int, features: np.ndarray | None) -> Recommender:
    """The configured model, its weights initialised from `tcfg.seed` (not from whatever ran before it in the
    process, e.g. an earlier model of a compare run)."""
    cls = model_class(tcfg.model)
    torch.manual_seed(tcfg.seed)
    return cls(n_users, n_items, tcfg.section(), torch.from_numpy(features) if features is not None else None)


def fit(model: Recommender, split: Split, tcfg: TrainConfig, rank: int = 0, world: int = 1,
        device: torch.device | None = None, wrap: Callable[[Recommender], nn.Module] | None = None) -> list[dict]:
    """Train with early stopping on validation NDCG@10; the best epoch's weights end up in `model`.

    With world > 1, this worker trains on every world-th user and `wrap(model)` must synchronise gradients
    (DDP); every worker validates the same model, so all take the same early-stopping decisions."""
    threads = torch.get_num_threads()
    if tcfg.cpu_threads:
        torch.set_num_threads(tcfg.cpu_threads)
    try:
        return _loop(model, split, tcfg, rank, world, device or resolve_device(tcfg.device), wrap)
    finally:
        torch.set_num_threads(threads)


def _loop(model: Recommender, split: Split, tcfg: TrainConfig, rank: int, world: int, device: torch.device,
          wrap: Callable[[Recommender], nn.Module] | None) -> list[dict]:
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed + rank)
    model.to(device)
    model.prepare(split.train)
    train = split.train if world == 1 else [s if u % world == rank else s[:0] for u, s in enumerate(split.train)]
    started = time.perf_counter()
    history: list[dict] = []

    def validate(epoch: int, loss: float | None) -> float:
        result = evaluate(model, split.valid, tcfg.mask_history, batch_size=tcfg.eval_batch_size)
        history.append({"epoch": epoch, "loss": loss, "seconds": round(time.perf_counter() - started, 2),
                        **{f"valid_{k}": v for k, v in result.metrics.items()}})
        return result.metrics["ndcg@10"]

    validate(0, None)
    if not model.trainable or tcfg.epochs == 0:
        return _with_best(history, 0, history[-1]["seconds"])
    # The untrained model's validation is recorded but is no best to beat: an untrained model can rank well by
    # accident (RPG's tied digits rank items by shared codes), and counting it would cut the lr and spend the
    # patience during the first epochs. The first trained epoch is the first best.
    best, best_state, best_epoch, best_seconds, waited = -np.inf, None, 0, 0.0, 0
    step = wrap(model) if wrap else model  # calling it computes the loss (Recommender.forward)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    average = WeightAverage(model, tcfg.ema_decay) if tcfg.ema_decay else None
    plateau_scale = 1.0  # the product of the plateau cuts so far
    # Seconds since training began, as every worker agrees (the slowest one's), for the time budget's decisions.
    seconds = _over_workers(time.perf_counter() - started, device, world, "max")
    epochs = tqdm(range(1, tcfg.epochs + 1), desc=model.name, disable=not tcfg.progress or rank > 0, unit="epoch")
    for epoch in epochs:
        model.train()
        losses = []
        batches = model.batches(train, tcfg.batch_size, rng)
        if world > 1:  # DDP needs the same number of steps on every worker, or its all-reduce waits forever
            batches = list(batches)
            batches = batches[:int(_over_workers(len(batches), device, world, "min"))]
        steps = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not tcfg.progress or rank > 0,
                     unit="batch")
        for group in optimizer.param_groups:
            group["lr"] = tcfg.lr * plateau_scale * _schedule(tcfg, epoch, seconds)
        for batch in steps:
            loss = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average:
                average.update()
            losses.append(loss.item())
            if len(losses) % 10 == 1:
                steps.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        with average.applied() if average else nullcontext():
            ndcg = validate(epoch, float(np.mean(losses)) if losses else None)
            if ndcg > best:
                best, best_epoch, best_seconds, waited = ndcg, epoch, history[-1]["seconds"], 0
                best_state = _copy_state(model)
            else:
                waited += 1
                plateau_scale *= tcfg.lr_plateau_factor
        history[-1]["lr"] = optimizer.param_groups[0]["lr"]
        epochs.set_postfix(loss=f"{history[-1]['loss'] or 0.0:.4f}", ndcg10=f"{ndcg:.4f}",
                           best=f"{best:.4f}@{best_epoch}")
        if not tcfg.progress:
            log.info("%s epoch %d: loss %.4f, lr %.3g, valid NDCG@10 %.4f (best %.4f at epoch %d)", model.name,
                     epoch, history[-1]["loss"] or 0.0, history[-1]["lr"], ndcg, best, best_epoch)
        if waited >= tcfg.patience:
            log.info("no better validation NDCG@10 for %d epochs: stopping at epoch %d", waited, epoch)
            break
        seconds = _over_workers(time.perf_counter() - started, device, world, "max")
        if tcfg.time_limit_s is not None and seconds >= tcfg.time_limit_s:
            log.info("time limit of %.0f s reached: stopping at epoch %d", tcfg.time_limit_s, epoch)
            break
    if best_state is not None:  # None only if no validation gave a number (NaN): the last weights stay
        model.load_state_dict(best_state)
    return _with_best(history, best_epoch, best_seconds)


class WeightAverage:
    """An exponential moving average of a model's trained parameters (`train.ema_decay`), swapped in to validate.

    Every worker of a DDP run holds the same parameters after each step, so their averages agree as well."""

    def __init__(self, model: Recommender, decay: float):
        self.model, self.decay, self.steps = model, decay, 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Fold in the weights after a step. The decay starts short ((1 + t) / (10 + t) at step t) so that the
        random initial weights are forgotten within the first steps rather than over the average's whole span."""
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for average, param in zip(self.average, self.params, strict=True):
            average.lerp_(param, 1 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its trained ones again after it."""
        trained = [p.detach().clone() for p in self.params]
        self._assign(self.average)
        try:
            yield
        finally:
            self._assign(trained)

    @torch.no_grad()
    def _assign(self, values: list[torch.Tensor]) -> None:
        for param, value in zip(self.params, values, strict=True):
            param.copy_(value)
        self.model.on_weights_loaded()  # e.g. LightGCN's propagated embeddings came from the other weights


def _schedule(tcfg: TrainConfig, epoch: int, seconds: float) -> float:
    """The lr's multiplier for `epoch` (from 1), which starts `seconds` into training: 1 for a constant lr; for
    a cosine, half a cosine period over whichever budget runs out first, the epochs or the time limit."""
    if tcfg.lr_schedule == "constant":
        return 1.0
    spent = (epoch - 1) / tcfg.epochs
    if tcfg.time_limit_s is not None:
        spent = max(spent, seconds / tcfg.time_limit_s)
    return 0.5 * (1.0 + math.cos(math.pi * min(spent, 1.0)))


def _over_workers(value: float, device: torch.device, world: int, op: str) -> float:
    """The min or max of `value` over the DDP workers, so all take the same decision (a worker that stops or
    steps alone leaves the others waiting in an all-reduce forever); `value` itself on one worker."""
    if world == 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    return float(tensor.item())


def _copy_state(model: Recommender) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _with_best(history: list[dict], best_epoch: int, best_seconds: float) -> list[dict]:
    history[0]["best_epoch"], history[0]["seconds_to_best"] = best_epoch, best_seconds
    return history
