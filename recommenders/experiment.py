"""Runs: one model trained and evaluated into its run folder (`run_train`), or several on one split
(`run_experiment`, as cornac's Experiment; `run_compare` is the `seerec compare` command on top of it).

`run_train(cfg)` loads the interactions (joined to the item store), splits them, reads the model's item
inputs from the store, builds `cfg.train.model`, trains it (locally, or on `train.workers` Ray Train
workers), evaluates the best epoch on validation and test (masked and unmasked), writes the run folder
(`recommenders.runs`) and, with `train.export_column`, the item embeddings into the store.

`run_experiment(cfg, entries, name)` trains every `Entry` (a model, its feature columns and dotted config
overrides) on one shared split under one evaluation, each into its own run folder `<name>/<entry>`, and
returns one row per entry. So a comparison or an ablation cell is always a normal run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.config import SeerecConfig, override_config
from pipeline.schema import KEY
from recommenders.data import Interactions, RecommenderError, Split, load_interactions, make_split
from recommenders.evaluate import evaluate
from recommenders.export import export_item_embeddings
from recommenders.registry import model_class
from recommenders.runs import RunResult, run_folder, write_run
from recommenders.train import build_model, fit, resolve_device

if TYPE_CHECKING:  # LanceDB is imported only where a store is used: training from files alone needs none
    from pipeline.store import ItemStore

log = logging.getLogger("seerec.train")


@dataclass
class Prepared:
    """The interactions and split every run of an experiment shares, and the item store."""

    interactions: Interactions
    split: Split
    store: ItemStore


def prepare_data(cfg: SeerecConfig) -> Prepared:
    from pipeline.store import ItemStore

    dcfg = cfg.train.data
    store = ItemStore(cfg.store)
    universe = None
    if dcfg.join_store:
        if store.exists():
            universe = store.scan([KEY])[KEY].to_pylist()
        else:
            # Not an error: an ID-only model needs no store (nothing is read or created); a model that reads
            # features, semantic IDs or exports to the store stops with its own sentence when it gets there.
            log.warning("no item store at %s: ranking over the items of the interactions only (set "
                        "train.data.join_store=false to train without a store)", cfg.store.uri)
    interactions = load_interactions(dcfg.path, dcfg.format, universe, dcfg.min_user_interactions, dcfg.short_users)
    split = make_split(interactions, dcfg.split, dcfg.valid_at, dcfg.test_at, dcfg.cold_items, dcfg.seed)
    if split.n_train == 0:
        raise RecommenderError("the split leaves no training interactions")
    log.info("interactions: %s; split: %s", interactions.report, split.summary())
    return Prepared(interactions, split, store)


def run_train(cfg: SeerecConfig, prepared: Prepared | None = None) -> RunResult:
    tcfg = cfg.train
    cls = model_class(tcfg.model)
    prepared = prepared or prepare_data(cfg)
    split, interactions = prepared.split, prepared.interactions
    if tcfg.features and cls.item_inputs != "features":
        log.warning("model %s reads no feature columns; train.features %s are not used", tcfg.model, tcfg.features)
    features, feature_report = cls.load_item_inputs(prepared.store, tcfg.section(), tcfg.features,
                                                    list(interactions.item_ids))
    run_dir, run_id = run_folder(tcfg)
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
    test = evaluate(model, split.test, tcfg.mask_history, batch_size=tcfg.eval_batch_size)
    report = model.evaluation_report()  # of the test ranking (each evaluation starts a new report)
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
    if report is not None:
        metrics["evaluation_report"] = report
    write_run(run_dir, cfg, model, metrics, interactions, split, test)
    if tcfg.export_column:
        export_item_embeddings(prepared.store, tcfg.export_column, model, interactions.item_ids, run_id,
                               f"{tcfg.model}:{'+'.join(tcfg.features) or 'ids'}")
    log.info("%s: valid NDCG@10 %.4f, test NDCG@10 %.4f Recall@10 %.4f (history %s) in %.1fs; run in %s",
             tcfg.model, valid.metrics["ndcg@10"], test.metrics["ndcg@10"], test.metrics["recall@10"],
             "masked" if tcfg.mask_history else "unmasked", train_seconds, run_dir)
    return RunResult(run_dir, run_id, metrics, model)


# ---- several models on one split ------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One run of an experiment: a model, the store feature columns it reads, and dotted config overrides
    (e.g. `train.sasrec.hidden=32`) applied on top of the experiment's config."""

    model: str
    features: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Entry:
        """`model` or `model:column+column`, as `compare.models` lists them."""
        model, _, columns = spec.partition(":")
        return cls(model.strip(), tuple(c.strip() for c in columns.split("+") if c.strip()))

    @property
    def label(self) -> str:
        return self.model + (f"-{'_'.join(self.features)}" if self.features else "")


def run_experiment(cfg: SeerecConfig, entries: list[Entry], name: str,
                   prepared: Prepared | None = None) -> pd.DataFrame:
    """Train every entry on one split (run folders `<runs_dir>/<name>/<entry>`); one row per entry."""
    for entry in entries:
        model_class(entry.model)  # an unknown name stops before anything trains
    prepared = prepared or prepare_data(cfg)
    rows, taken = [], set()
    for entry in entries:
        label = _unique(entry.label, taken)
        run_cfg = cfg.model_copy(deep=True)
        run_cfg.train.model = entry.model
        run_cfg.train.features = list(entry.features)
        run_cfg.train.name = f"{name}/{label}"
        run_cfg = override_config(run_cfg, entry.overrides) if entry.overrides else run_cfg
        m = run_train(run_cfg, prepared).metrics
        rows.append({"model": entry.model, "features": "+".join(entry.features) or "-",
                     **({"overrides": " ".join(entry.overrides) or "-"} if any(e.overrides for e in entries) else {}),
                     "valid_ndcg@10": m["valid"]["ndcg@10"], **{f"test_{k}": v for k, v in m["test"].items()},
                     "best_epoch": m["best_epoch"], "seconds": m["train_seconds"], "run": f"{name}/{label}"})
    return pd.DataFrame(rows)


def _unique(label: str, taken: set[str]) -> str:
    """`label`, or `label-2`, `label-3`, ... when an earlier entry of the experiment has it."""
    candidate, n = label, 1
    while candidate in taken:
        n += 1
        candidate = f"{label}-{n}"
    taken.add(candidate)
    return candidate


def run_compare(cfg: SeerecConfig, prepared: Prepared | None = None) -> tuple[pd.DataFrame, Path]:
    """Train every `compare.models` entry on one split, one evaluation; write compare.md/.csv/.png."""
    prepared = prepared or prepare_data(cfg)
    table = run_experiment(cfg, [Entry.parse(spec) for spec in cfg.compare.models], cfg.compare.name, prepared)
    out_dir = Path(cfg.train.runs_dir) / cfg.compare.name
    masking = "history masked" if cfg.train.mask_history else "history not masked"
    header = (f"Split: {prepared.split.kind}, {len(prepared.split.test)} test users, full ranking over "
              f"{prepared.split.n_items} items, {masking}, seed {cfg.train.seed}.\n\n")
    (out_dir / "compare.md").write_text(header + markdown_table(table) + "\n")
    table.to_csv(out_dir / "compare.csv", index=False)
    bar_chart(table, out_dir / "compare.png", masking)
    return table, out_dir


def markdown_table(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def bar_chart(table: pd.DataFrame, path: Path, masking: str) -> None:
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
