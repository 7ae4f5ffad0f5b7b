"""The feature ablation (`seerec ablate`, `python -m jobs.ablate`, `seerec submit ablate`): every feature set x
model cell on one shared split per `ablate.splits` entry, trained as Ray tasks, written as one table.

    python -m jobs.ablate --config configs/ablation-scientific.yaml

With `ablate.embed_texts` the driver first builds the store (`build_store`): `seerec ingest` when the store
has no items, then `seerec embed`'s text stage once per listed column and template; items done by the same model
are skipped, so a re-run embeds nothing. The driver then checks the feature sets against the store (a missing
column stops with one sentence listing the vector columns; items without vectors are counted), quantizes
semantic IDs from each feature set that a generative model needs (`sid_<set>`, with the `quantize` settings),
then runs the unfinished cells as Ray tasks with `ablate.cpus`/`ablate.gpus` each, so Ray runs as many at once
as the cluster holds. Each cell is a normal `run_train` run folder; a re-run skips cells finished with the same
config (recommenders/ablation.py).
Output under `<train.runs_dir>/<ablate.name>/`: ablation.md, ablation.csv, ablation.json, ablation.png.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from extractors.embed import TemplateError, template_fields
from jobs.embed import run_embed
from jobs.ingest import run_ingest
from jobs.quantize import run_quantize
from pipeline.config import SeerecConfig
from pipeline.runtime import StageSummary, init_ray
from pipeline.schema import KEY, is_vector_field
from pipeline.store import ItemStore, StoreError
from recommenders import ablation as ab
from recommenders.data import RecommenderError
from recommenders.experiment import Prepared, prepare_data
from recommenders.features import load_item_features
from recommenders.registry import model_class

log = logging.getLogger("seerec.ablate")


@dataclass
class Plan:
    """What the driver resolves before training: each split's data, the feature sets, the cells and each cell's
    config. `run_ablation` trains its cells as Ray tasks; `write_outputs` turns the finished cells into the table."""

    prepared: dict[str, Prepared]
    feature_sets: list[str]
    baseline: str
    notes: list[str]
    cells: list[ab.Cell]
    runs: dict[ab.Cell, SeerecConfig]


def plan_ablation(cfg: SeerecConfig) -> Plan:
    a = cfg.ablate
    ab.check_models(a.models, a.reference_models)
    store = ItemStore(cfg.store)
    feature_sets = a.feature_sets or store_feature_sets(store)
    baseline = a.baseline or feature_sets[0]
    if baseline not in (*feature_sets, ab.ID_ROW):
        raise RecommenderError(f"ablate.baseline {baseline!r} is neither one of the feature sets "
                               f"({', '.join(feature_sets)}) nor {ab.ID_ROW!r} (the ID-only row)")
    prepared = {split: prepare_data(_with_split(cfg, split)) for split in a.splits}
    notes = check_feature_sets(store, feature_sets, list(next(iter(prepared.values())).interactions.item_ids))
    cells = ab.grid(cfg, feature_sets)
    return Plan(prepared, feature_sets, baseline, notes, cells, {cell: ab.cell_config(cfg, cell) for cell in cells})


def run_ablation(cfg: SeerecConfig) -> pd.DataFrame:
    a = cfg.ablate
    build_store(cfg)
    plan = plan_ablation(cfg)
    pending = [cell for cell in plan.cells if not ab.finished(plan.runs[cell])]
    log.info("ablation %s: %d cells (%d splits x %d feature sets + ID-only row), %d already finished", a.name,
             len(plan.cells), len(a.splits), len(plan.feature_sets), len(plan.cells) - len(pending))
    make_semantic_ids(plan.runs, pending)
    started = time.perf_counter()
    train_cells(cfg, [plan.runs[cell] for cell in pending], [cell for cell in pending])
    log.info("trained %d cells in %.0fs", len(pending), time.perf_counter() - started)
    return write_outputs(cfg, plan)


def build_store(cfg: SeerecConfig) -> list[StageSummary]:
    """With `ablate.embed_texts`: ingest `ingest.path` when the store has no items, then run the text embedding
    stage once per listed column with its template (image and audio off); without it, nothing. The stages skip
    what is done, so a re-run embeds nothing and a killed build resumes. Returns the stages' summaries."""
    texts = cfg.ablate.embed_texts
    if not texts:
        return []
    _check_templates(texts)  # before any work: a template that cannot be read
    store = ItemStore(cfg.store)
    summaries = []
    if not store.exists() or store.count() == 0:
        if not cfg.ingest.path:
            raise RecommenderError(f"the store at {cfg.store.uri} has no items and ingest.path is not set; set it "
                                   "to the catalog (ablate.embed_texts then ingests it) or run `seerec ingest` first")
        summaries.append(run_ingest(cfg))
    _check_templates(texts, store)  # a field the store has no column for, before the first embedding
    for column, template in texts.items():
        run = cfg.model_copy(deep=True)
        run.embed.text = run.embed.text.model_copy(update={"enabled": True, "column": column, "template": template})
        run.embed.image.enabled = run.embed.audio.enabled = False
        summaries += run_embed(run)
    return summaries


def _check_templates(texts: dict[str, str], store: ItemStore | None = None) -> None:
    """`seerec embed`'s errors for a template, naming the ablate.embed_texts entry."""
    for column, template in texts.items():
        try:
            fields = template_fields(template)
            if store is not None:
                store.require_columns(fields)
        except (TemplateError, StoreError) as exc:
            raise type(exc)(f"ablate.embed_texts {column}: {exc}") from None


def store_feature_sets(store: ItemStore) -> list[str]:
    """Every vector column of the store, one feature set each (so new embedding columns join by themselves)."""
    if not store.exists():
        raise RecommenderError(f"the store at {store.cfg.uri} has no item table; run `seerec ingest` and "
                               "`seerec embed` first, or list the text columns to embed in ablate.embed_texts")
    columns = [f.name for f in store.schema if is_vector_field(f)]
    if not columns:
        raise RecommenderError(f"the store at {store.cfg.uri} has no vector column to ablate; run `seerec embed`")
    return columns


def check_feature_sets(store: ItemStore, feature_sets: list[str], item_ids: list[str]) -> list[str]:
    """Stop on a column the store lacks (the message lists the vector columns it has); count, log and return
    as table notes the items a feature set has no vector for (content models give them zero features)."""
    notes = []
    for fs in feature_sets:
        _, report = load_item_features(store, ab.feature_columns(fs), item_ids)
        if missing := report["items_without_features"]:
            notes.append(f"{fs}: {missing} of {len(item_ids)} items have no vector; content models give them zero "
                         "features, and tiger cannot generate items without a semantic ID")
            log.warning("%s", notes[-1])
    return notes


def make_semantic_ids(runs: dict[ab.Cell, SeerecConfig], pending: list[ab.Cell]) -> None:
    """Quantize each feature set a pending generative cell needs, once (the first split's cell config)."""
    done = set()
    for cell in pending:
        run = runs[cell]
        if model_class(cell.model).item_inputs != "semantic_ids" or run.quantize.column in done:
            continue
        log.info("quantizing %s into %s for %s", "+".join(run.quantize.columns), run.quantize.column, cell.model)
        run_quantize(run)
        done.add(run.quantize.column)


def train_cells(cfg: SeerecConfig, runs: list[SeerecConfig], cells: list[ab.Cell]) -> None:
    """One Ray task per cell with the cell's resources; Ray decides how many run at once."""
    if not runs:
        return
    import ray
    from tqdm import tqdm

    init_ray(cfg.ray)
    task = ray.remote(num_cpus=cfg.ablate.cpus, num_gpus=cfg.ablate.gpus, max_retries=0)(ab.train_cell)
    refs = {task.remote(run.model_dump(mode="json"), cell): cell for run, cell in zip(runs, cells, strict=True)}
    # Outside a terminal a redrawn bar would run into the log lines, which name each finished cell anyway.
    with tqdm(total=len(refs), desc="ablation cells", unit="cell", disable=not sys.stderr.isatty()) as bar:
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            cell = refs[ready[0]]
            seconds = ray.get(ready[0])  # a failed cell raises here and stops the job; finished cells stay done
            bar.update()
            log.info("cell %s finished in %.0fs", cell.path, seconds)


def _with_split(cfg: SeerecConfig, split: str) -> SeerecConfig:
    run = cfg.model_copy(deep=True)
    run.train.data.split = split
    return run


# ---- output ---------------------------------------------------------------------------------------------
def write_outputs(cfg: SeerecConfig, plan: Plan) -> pd.DataFrame:
    a = cfg.ablate
    cells, runs, prepared, feature_sets = plan.cells, plan.runs, plan.prepared, plan.feature_sets
    baseline, notes = plan.baseline, plan.notes
    masking, other = ("masked", "unmasked") if cfg.train.mask_history else ("unmasked", "masked")
    rows, per_user = [], {}
    for cell in cells:
        folder = ab.run_dir(runs[cell])
        rows.append(ab.cell_row(cell, json.loads((folder / "metrics.json").read_text()), cfg.train.mask_history))
        per_user[cell.path] = pd.read_csv(folder / "test_per_user.csv", dtype={"user_id": str, "target_item_id": str})
    table = ab.add_gains(pd.DataFrame(rows), per_user, baseline, masking, a.alpha, a.baseline_cell_model)
    out = Path(cfg.train.runs_dir) / a.name
    breakdowns = {split: _breakdowns(cfg, prepared[split], [c for c in cells if c.split == split], per_user)
                  for split in a.splits}
    baseline_text = (f"the ID-only row's {a.baseline_cell_model} cell" if baseline == ab.ID_ROW
                     else f"the {baseline} row's cell of the same model")
    caption = (f"Test HR@10 / NDCG@10 (HR@10 = Recall@10, one target per user), full ranking, history {masking}; "
               f"in brackets the relative NDCG@10 gain over {baseline_text}, * = p < {a.alpha} "
               "in a two-sided paired t-test on per-user NDCG@10 over the test users. Each split's second table gives "
               f"the cells with history {other}.")
    parts = [f"# Ablation {a.name}\n", caption + "\n", *([a.note + "\n"] if a.note else [])]
    for split in a.splits:
        p = prepared[split].split
        models = [*a.models, *a.reference_models]
        parts += [f"## {split}\n", f"{len(p.test)} test users, {p.n_items} items, seed {cfg.train.seed}.\n",
                  ab.markdown(table, split, feature_sets, models, masking) + "\n",
                  f"The same cells, history {other}: HR@10 / NDCG@10 (gains and tests are for history {masking}).\n",
                  ab.markdown(table, split, feature_sets, models, other, gains=False) + "\n"]
        parts += _breakdown_markdown(breakdowns[split])
    if notes:
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in notes) + "\n"]
    (out / "ablation.md").write_text("\n".join(parts))
    table.to_csv(out / "ablation.csv", index=False)
    (out / "ablation.json").write_text(json.dumps({
        "name": a.name, "caption": caption, "note": a.note, "shown": masking, "baseline": baseline,
        "baseline_model": a.baseline_cell_model, "test": "paired t-test",
        "alpha": a.alpha, "feature_sets": feature_sets, "splits": a.splits, "notes": notes,
        "cells": json.loads(table.to_json(orient="records")), "breakdowns": breakdowns}, indent=2))
    _chart(table, a.splits, out / "ablation.png", masking)
    log.info("ablation table written to %s (ablation.md, ablation.csv, ablation.json, ablation.png)", out)
    return table


def _breakdowns(cfg: SeerecConfig, prepared: Prepared, cells: list[ab.Cell],
                per_user: dict[str, pd.DataFrame]) -> dict:
    """Per grouping of test target items (by training popularity; by duration when the store has one): each
    cell's HR@10 and NDCG@10 per group."""
    split, ids = prepared.split, prepared.interactions.item_ids
    counts = np.bincount(np.concatenate(split.train) if split.n_train else np.zeros(0, np.int64),
                         minlength=split.n_items)
    groupings = {"training popularity": dict(zip(map(str, ids), ab.popularity_groups(counts, cfg.ablate.rare_below),
                                                 strict=True))}
    durations = _durations(prepared.store, cfg.ablate.duration_field, [str(i) for i in ids])
    if durations is not None and (groups := ab.duration_groups(durations)) is not None:
        groupings["duration"] = dict(zip(map(str, ids), groups, strict=True))
    else:
        log.info("the store has no %r column or metadata key: no breakdown by duration", cfg.ablate.duration_field)
    return {name: {c.path: ab.breakdown(per_user[c.path], groups) for c in cells} for name, groups in groupings.items()}


def _durations(store: ItemStore, field: str, item_ids: list[str]) -> np.ndarray | None:
    """Each item's duration in seconds (NaN when unknown) from a store column or a metadata key; None without."""
    names = store.schema.names
    if field in names:
        table = store.scan([KEY, field]).to_pandas()
        values = pd.to_numeric(table[field], errors="coerce")
    elif "metadata" in names:
        table = store.scan([KEY, "metadata"]).to_pandas()
        values = pd.to_numeric(table["metadata"].map(lambda m: _metadata_value(m, field)), errors="coerce")
        if values.notna().sum() == 0:
            return None
    else:
        return None
    by_id = dict(zip(table[KEY].astype(str), values, strict=True))
    return np.array([by_id.get(i, np.nan) for i in item_ids], dtype=np.float64)


def _metadata_value(raw: object, field: str) -> object:
    """`field` of an item's metadata JSON object; None when the item has none, or it is not an object."""
    parsed = json.loads(raw) if isinstance(raw, str) else None
    return parsed.get(field) if isinstance(parsed, dict) else None


def _breakdown_markdown(breakdowns: dict) -> list[str]:
    parts = []
    for name, by_cell in breakdowns.items():
        groups = sorted({g["group"] for rows in by_cell.values() for g in rows})
        users = {g["group"]: g["users"] for rows in by_cell.values() for g in rows}
        lines = [f"NDCG@10 by {name} of the test target ({len(groups)} group{'s' * (len(groups) != 1)}; users per "
                 "group in the header):\n", "| cell | " + " | ".join(f"{g} ({users[g]})" for g in groups) + " |",
                 "|---|" + "---|" * len(groups)]
        for path, rows in by_cell.items():
            values = {g["group"]: g["ndcg@10"] for g in rows}
            lines.append(f"| {path.split('/', 1)[1]} | " + " | ".join(f"{values.get(g, 0):.4f}" for g in groups) + " |")
        parts.append("\n".join(lines) + "\n")
    return parts


def _chart(table: pd.DataFrame, splits: list[str], path: Path, masking: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(splits), 1, figsize=(8, 3.6 * len(splits)), squeeze=False)
    for ax, split in zip(axes[:, 0], splits, strict=True):
        ab.bar_chart(table, split, ax, masking)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_ablation, "Train every feature set x model cell on one split and write the ablation table.",
                    argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
