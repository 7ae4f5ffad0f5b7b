"""The shared training loop and run folders: one place for every model (nanoGPT's train.py, in spirit).

`run_train(cfg)` loads the interactions (joined to the item store), splits them, reads item features
from the store, builds `cfg.train.model`, trains it (seeded; early stopping on validation NDCG@10 with
`patience`; tqdm bars with live loss and metrics; the GPU when present), evaluates the best epoch on
validation and test, and writes `runs/<name>/`:

- `metrics.json`: validation and test metrics under the configured masking setting (stated in the file),
  test under the other setting too, epochs, seconds to the best epoch and the split summary;
- `model.pt` (a `state_dict`) + `model.json` (model name, hyperparameters, sizes, features, run id);
  `load_run` reads them back with `torch.load(weights_only=True)`; `items.json` maps indexes to item ids;
- `config.yaml` (the resolved config), `curve.png` (loss and validation NDCG@10 per epoch),
  `test_per_user.csv` (each test user's target and rank).

`train.export_column` writes the trained item embeddings into the store as a vector column family, with
the run id as its `_model` provenance. `run_compare` trains several models on one split and writes a
Markdown table, a CSV and a bar chart.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import yaml
from tqdm.auto import tqdm

from pipeline.config import SeerecConfig, TrainConfig
from pipeline.schema import KEY, vector_family
from recommenders.base import Recommender
from recommenders.data import Interactions, RecommenderError, Split, load_interactions, make_split
from recommenders.evaluate import EvalResult, evaluate
from recommenders.models import MODELS

if TYPE_CHECKING:  # LanceDB is imported only where a store is used: training from files alone needs none
    from pipeline.store import ItemStore

log = logging.getLogger("seerec.train")


@dataclass
class Prepared:
    interactions: Interactions
    split: Split
    store: ItemStore


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    metrics: dict
    model: Recommender = field(repr=False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_data(cfg: SeerecConfig) -> Prepared:
    from pipeline.store import ItemStore

    dcfg = cfg.train.data
    store = ItemStore(cfg.store)
    universe = None
    if dcfg.join_store:
        if store.exists():
            universe = store.scan([KEY])[KEY].to_pylist()
        else:
            log.info("no item table at %s: ranking over the items of the interactions only", cfg.store.uri)
    interactions = load_interactions(dcfg.path, dcfg.format, universe, dcfg.min_user_interactions, dcfg.short_users)
    split = make_split(interactions, dcfg.split, dcfg.valid_at, dcfg.test_at, dcfg.cold_items, dcfg.seed)
    if split.n_train == 0:
        raise RecommenderError("the split leaves no training interactions")
    log.info("interactions: %s; split: %s", interactions.report, split.summary())
    return Prepared(interactions, split, store)


def build_model(tcfg: TrainConfig, n_users: int, n_items: int, features: np.ndarray | None) -> Recommender:
    """The configured model, its weights initialised from `tcfg.seed` (not from whatever ran before it in the
    process, e.g. an earlier model of a compare run)."""
    cls = MODELS[tcfg.model]
    hparams = getattr(tcfg, tcfg.model).model_dump()
    if cls.needs_features and features is None:
        raise RecommenderError(f"model {tcfg.model} needs item features; name store vector columns in "
                               "train.features, e.g. train.features=[text_vec]")
    torch.manual_seed(tcfg.seed)
    return cls(n_users, n_items, torch.from_numpy(features) if features is not None else None, **hparams)


def fit(model: Recommender, split: Split, tcfg: TrainConfig) -> list[dict]:
    """Train with early stopping on validation NDCG@10; the best epoch's weights end up in `model`."""
    threads = torch.get_num_threads()
    if tcfg.cpu_threads:
        torch.set_num_threads(tcfg.cpu_threads)
    try:
        return _fit(model, split, tcfg)
    finally:
        torch.set_num_threads(threads)


def _fit(model: Recommender, split: Split, tcfg: TrainConfig, rank: int = 0, world: int = 1,
         device: torch.device | None = None) -> list[dict]:
    """The loop. With world > 1 (a Ray Train worker), this worker trains on every world-th user's sequence
    and gradients are averaged over the workers after each step; every worker validates the same (synced)
    model, so all take the same early-stopping decisions without talking."""
    device = device or resolve_device(tcfg.device)
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

    best = validate(0, None)
    best_state, best_epoch, best_seconds, waited = _copy_state(model), 0, history[-1]["seconds"], 0
    if not model.trainable or tcfg.epochs == 0:
        return _with_best(history, best_epoch, best_seconds)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    epochs = tqdm(range(1, tcfg.epochs + 1), desc=model.name, disable=not tcfg.progress or rank > 0, unit="epoch")
    for epoch in epochs:
        model.train()
        losses = []
        batches = model.batches(train, tcfg.batch_size, rng)
        if world > 1:  # every worker must take the same number of steps, or the gradient all-reduce hangs
            batches = list(batches)
            batches = batches[:_min_over_workers(len(batches), device)]
        steps = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not tcfg.progress or rank > 0,
                     unit="batch")
        for batch in steps:
            loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _average_gradients(model, world)
            optimizer.step()
            losses.append(loss.item())
            if len(losses) % 10 == 1:
                steps.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        ndcg = validate(epoch, float(np.mean(losses)) if losses else None)
        history[-1]["lr"] = optimizer.param_groups[0]["lr"]
        if ndcg > best:
            best, best_epoch, best_seconds, waited = ndcg, epoch, history[-1]["seconds"], 0
            best_state = _copy_state(model)
        else:
            waited += 1
            for group in optimizer.param_groups:
                group["lr"] *= tcfg.lr_plateau_factor
        epochs.set_postfix(loss=f"{history[-1]['loss'] or 0.0:.4f}", ndcg10=f"{ndcg:.4f}",
                           best=f"{best:.4f}@{best_epoch}")
        if not tcfg.progress:
            log.info("%s epoch %d: loss %.4f, lr %.3g, valid NDCG@10 %.4f (best %.4f at epoch %d)", model.name,
                     epoch, history[-1]["loss"] or 0.0, history[-1]["lr"], ndcg, best, best_epoch)
        if waited >= tcfg.patience:
            log.info("no better validation NDCG@10 for %d epochs: stopping at epoch %d", waited, epoch)
            break
    model.load_state_dict(best_state)
    if hasattr(model, "stale"):
        model.stale = True
    return _with_best(history, best_epoch, best_seconds)


def _min_over_workers(value: int, device: torch.device) -> int:
    import torch.distributed as dist

    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def _average_gradients(model: Recommender, world: int) -> None:
    import torch.distributed as dist

    for param in model.parameters():
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)
        param.grad /= world


def _copy_state(model: Recommender) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _with_best(history: list[dict], best_epoch: int, best_seconds: float) -> list[dict]:
    history[0]["best_epoch"], history[0]["seconds_to_best"] = best_epoch, best_seconds
    return history


def run_train(cfg: SeerecConfig, prepared: Prepared | None = None) -> RunResult:
    tcfg = cfg.train
    prepared = prepared or prepare_data(cfg)
    split, interactions = prepared.split, prepared.interactions
    features, feature_report = None, {}
    load_item_inputs = getattr(MODELS[tcfg.model], "load_item_inputs", None)
    if load_item_inputs is not None:  # e.g. a generative model's semantic IDs, read from the store
        features, feature_report = load_item_inputs(prepared.store, tcfg, list(interactions.item_ids))
    elif tcfg.features:
        from recommenders.features import load_item_features

        features, feature_report = load_item_features(prepared.store, tcfg.features, list(interactions.item_ids))
    elif MODELS[tcfg.model].needs_features:
        build_model(tcfg, split.n_users, split.n_items, None)  # raises the one-sentence error
    name = tcfg.name or f"{tcfg.model}{'-' + '+'.join(tcfg.features) if tcfg.features else ''}-" \
                        f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    run_dir = Path(tcfg.runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"seerec-train:{name}"
    model = build_model(tcfg, split.n_users, split.n_items, features)
    started = time.perf_counter()
    if tcfg.workers > 1 and model.trainable and tcfg.epochs:
        from recommenders.distributed import fit_with_ray_train

        history = fit_with_ray_train(model, split, cfg, run_dir)
        model.to(resolve_device(tcfg.device))
    else:
        history = fit(model, split, tcfg)
    train_seconds = time.perf_counter() - started
    valid = evaluate(model, split.valid, tcfg.mask_history, batch_size=tcfg.eval_batch_size)
    if hasattr(model, "reset_decode_stats"):  # generative models: count invalid IDs of the test ranking only
        model.reset_decode_stats()
    test = evaluate(model, split.test, tcfg.mask_history, batch_size=tcfg.eval_batch_size)
    decoding = model.decode_report() if hasattr(model, "decode_report") else None
    test_other = evaluate(model, split.test, not tcfg.mask_history, batch_size=tcfg.eval_batch_size)
    other = "test_unmasked" if tcfg.mask_history else "test_masked"
    metrics = {
        "run_id": run_id, "model": tcfg.model, "features": tcfg.features, "mask_history": tcfg.mask_history,
        "valid": valid.metrics, "test": test.metrics, other: test_other.metrics,
        "best_epoch": history[0]["best_epoch"], "epochs_run": history[-1]["epoch"],
        "seconds_to_best": history[0]["seconds_to_best"], "train_seconds": round(train_seconds, 2),
        "device": str(model.device), "seed": tcfg.seed, "split": split.summary(), "data": interactions.report,
        "features_report": feature_report, "history": history,
    }
    if decoding is not None:
        metrics["decoding"] = decoding
    _write_run(run_dir, cfg, model, metrics, interactions, test, run_id)
    if tcfg.export_column:
        export_item_embeddings(prepared.store, tcfg.export_column, model, interactions.item_ids, run_id,
                               f"{tcfg.model}:{'+'.join(tcfg.features) or 'ids'}")
    log.info("%s: valid NDCG@10 %.4f, test NDCG@10 %.4f Recall@10 %.4f (history %s) in %.1fs; run in %s",
             tcfg.model, valid.metrics["ndcg@10"], test.metrics["ndcg@10"], test.metrics["recall@10"],
             "masked" if tcfg.mask_history else "unmasked", train_seconds, run_dir)
    return RunResult(run_dir, run_id, metrics, model)


def _write_run(run_dir: Path, cfg: SeerecConfig, model: Recommender, metrics: dict, interactions: Interactions,
               test: EvalResult, run_id: str) -> None:
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    meta = {"model": model.name, "hparams": model.hparams, "n_users": model.n_users, "n_items": model.n_items,
            "features": cfg.train.features,
            "feature_dim": None if model.features is None else int(model.features.shape[1]), "run_id": run_id}
    (run_dir / "model.json").write_text(json.dumps(meta, indent=2))
    (run_dir / "items.json").write_text(json.dumps([str(i) for i in interactions.item_ids]))
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, run_dir / "model.pt")
    per_user = test.per_user()
    frame = pd.DataFrame({"user_id": interactions.user_ids[per_user["user"]],
                          "target_item_id": interactions.item_ids[per_user["target"]], "rank": per_user["rank"]})
    frame.to_csv(run_dir / "test_per_user.csv", index=False)
    plot_curve(metrics["history"], run_dir / "curve.png", f"{model.name} ({run_id})")


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, left = plt.subplots(figsize=(6, 3.5))
    losses = [(h["epoch"], h["loss"]) for h in history if h["loss"] is not None]
    if losses:
        left.plot(*zip(*losses, strict=True), color="tab:blue", marker=".", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, [h["valid_ndcg@10"] for h in history], color="tab:orange", marker=".", label="valid NDCG@10")
    right.set_ylabel("validation NDCG@10", color="tab:orange")
    left.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Recommender, dict]:
    """Rebuild a trained model from `model.json` + `model.pt` (loaded with weights_only=True)."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.json").is_file() or not (run_dir / "model.pt").is_file():
        raise RecommenderError(f"{run_dir} is not a training run folder (model.json and model.pt are missing)")
    meta = json.loads((run_dir / "model.json").read_text())
    cls = MODELS[meta["model"]]
    features = torch.zeros(meta["n_items"], meta["feature_dim"]) if meta["feature_dim"] else None
    model = cls(meta["n_users"], meta["n_items"], features, **meta["hparams"])
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    return model.to(device).eval(), meta


def export_item_embeddings(store: ItemStore, column: str, model: Recommender, item_ids, run_id: str,
                           source: str) -> int:
    """Write one vector per item into `column` (+ `_model` = run id, `_source`, `_at`, `_error`)."""
    vectors = model.item_embeddings()
    if vectors is None:
        raise RecommenderError(f"model {model.name} has no item embeddings to export; unset train.export_column")
    if not store.exists():
        raise RecommenderError(f"cannot export to {column!r}: the store at {store.cfg.uri} has no item table")
    vectors = vectors.detach().float().cpu().numpy()
    family = vector_family(column, vectors.shape[1])
    n = len(item_ids)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    table = pa.table({
        KEY: pa.array([str(i) for i in item_ids], pa.string()),
        column: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        family.model_column: pa.array([run_id] * n, pa.string()),
        family.time_column: pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        family.error_column: pa.nulls(n, pa.string()),
        f"{column}_source": pa.array([source] * n, pa.string()),
    })
    written = 0
    for start in range(0, n, store.cfg.write_batch_rows):
        result = store.write_family(family, table.slice(start, store.cfg.write_batch_rows))
        written += result.updated
    log.info("exported %d item embeddings (%d dimensions) to store column %s as %s", written, vectors.shape[1],
             column, run_id)
    return written


# ---- compare -------------------------------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, list[str]]:
    model, _, cols = spec.partition(":")
    model = model.strip()
    if model not in MODELS:
        raise RecommenderError(f"compare.models entry {spec!r} names no model; models are: {', '.join(MODELS)}")
    return model, [c.strip() for c in cols.split("+") if c.strip()]


def run_compare(cfg: SeerecConfig, prepared: Prepared | None = None) -> tuple[pd.DataFrame, Path]:
    """Train every `compare.models` entry on one split, one evaluation; write compare.md/.csv/.png."""
    specs = [parse_spec(s) for s in cfg.compare.models]
    prepared = prepared or prepare_data(cfg)
    out_dir = Path(cfg.train.runs_dir) / cfg.compare.name
    rows = []
    for spec, (model, features) in zip(cfg.compare.models, specs, strict=True):
        run_cfg = copy.deepcopy(cfg)
        run_cfg.train.model, run_cfg.train.features = model, features
        run_cfg.train.name = f"{cfg.compare.name}/{spec.replace(':', '-').replace('+', '_')}"
        result = run_train(run_cfg, prepared)
        m = result.metrics
        rows.append({"model": model, "features": "+".join(features) or "-",
                     "valid_ndcg@10": m["valid"]["ndcg@10"],
                     **{f"test_{k}": v for k, v in m["test"].items()},
                     "best_epoch": m["best_epoch"], "seconds": m["train_seconds"]})
    table = pd.DataFrame(rows)
    masking = "history masked" if cfg.train.mask_history else "history not masked"
    header = (f"Split: {prepared.split.kind}, {len(prepared.split.test)} test users, full ranking over "
              f"{prepared.split.n_items} items, {masking}, seed {cfg.train.seed}.\n\n")
    (out_dir / "compare.md").write_text(header + _markdown(table) + "\n")
    table.to_csv(out_dir / "compare.csv", index=False)
    _bar_chart(table, out_dir / "compare.png", masking)
    return table, out_dir


def _markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _bar_chart(table: pd.DataFrame, path: Path, masking: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m if f == "-" else f"{m}\n{f}" for m, f in zip(table["model"], table["features"], strict=True)]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(table)), 3.5))
    ax.bar(x - 0.2, table["test_recall@10"], 0.4, label="Recall@10")
    ax.bar(x + 0.2, table["test_ndcg@10"], 0.4, label="NDCG@10")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_title(f"test, full ranking, {masking}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
