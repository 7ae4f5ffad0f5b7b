"""What the explorer reads from run folders: metrics, comparison tables, plots, and a run's model for users.

A `--run` folder is either one training run (it holds `model.json`) or a comparison/ablation folder (it holds
`*.md` tables and one run folder per entry). A user page needs a run with a model: the run's own config names
its interaction file and split, so the user's history is rebuilt exactly as the run trained on it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.config import validate_config
from pipeline.errors import SeerecError
from recommenders.data import load_interactions, make_split
from recommenders.runs import load_run

log = logging.getLogger("seerec.explore")


class RunError(SeerecError):
    """A run folder the explorer cannot read, or a user or item it does not know; one sentence."""


@dataclass
class Table:
    """A Markdown pipe table, split into cells (rendered by the template, so every cell is escaped)."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class RunView:
    """One --run folder as the runs page shows it."""

    name: str
    path: Path
    notes: list[str] = field(default_factory=list)  # the non-table lines of its .md files
    tables: dict[str, list[Table]] = field(default_factory=dict)  # file name -> its tables
    metrics: dict[str, dict] = field(default_factory=dict)  # run (relative) -> flat metrics
    plots: list[str] = field(default_factory=list)  # PNG files, relative to the folder


def read_run_folder(path: Path) -> RunView:
    view = RunView(path.name, path)
    for md in sorted(path.glob("*.md")):
        view.tables[md.name] = markdown_tables(md.read_text(), view.notes)
    for metrics in sorted([path / "metrics.json", *path.glob("*/metrics.json")]):
        if metrics.is_file():
            name = str(metrics.parent.relative_to(path)) if metrics.parent != path else "."
            view.metrics[name] = flat_metrics(json.loads(metrics.read_text()))
    view.plots = sorted(str(p.relative_to(path)) for p in [*path.glob("*.png"), *path.glob("*/*.png")])
    return view


def markdown_tables(text: str, notes: list[str]) -> list[Table]:
    """The pipe tables of a Markdown file; its other non-empty lines go to `notes`."""
    tables: list[Table] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            tables.append(Table(block[0], body))
            block = []
        if line.strip():
            notes.append(line.strip())
    return tables


def flat_metrics(metrics: dict) -> dict:
    """The scalar entries of metrics.json, nested keys joined by '.', e.g. test.recall@10; history left out."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif prefix != "history" and not isinstance(value, list):
            flat[prefix] = value

    walk("", metrics)
    return flat


class UserModel:
    """A trained run, its item index and its users' interactions, loaded once for the user pages."""

    def __init__(self, run_dir: Path):
        if not (run_dir / "model.json").is_file():
            raise RunError(f"{run_dir} holds no trained model (model.json); pass a run folder, not a comparison")
        self.run_dir = run_dir
        self.model, self.about = load_run(run_dir)
        self.item_ids = np.array(json.loads((run_dir / "items.json").read_text()), dtype=object)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        cfg = validate_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
        data = cfg.train.data
        interactions = load_interactions(data.path, data.format, list(self.item_ids), data.min_user_interactions,
                                         data.short_users)
        if list(interactions.item_ids) != list(self.item_ids):
            raise RunError(f"the interactions in {data.path} no longer give the items {run_dir} trained on")
        split = make_split(interactions, data.split, data.valid_at, data.test_at, data.cold_items, data.seed)
        self.user_ids = interactions.user_ids
        self.user_index = {str(user): u for u, user in enumerate(self.user_ids)}
        self.sequences = interactions.sequences
        self.trained = np.zeros(len(self.item_ids), dtype=bool)
        for history in split.train:
            self.trained[history] = True
        self.mask_history = cfg.train.mask_history
        log.info("loaded run %s (%s): %d users, %d items", run_dir, self.about["model"], len(self.user_ids),
                 len(self.item_ids))

    @property
    def name(self) -> str:
        return self.about["model"]

    def history(self, user_id: str) -> list[str]:
        if user_id not in self.user_index:
            raise RunError(f"run {self.run_dir.name} has no user {user_id!r}")
        return [str(self.item_ids[i]) for i in self.sequences[self.user_index[user_id]]]

    def recommend(self, history: list[str], k: int, user_id: str | None = None) -> list[dict]:
        """The top k after `history` (its items excluded), each with its score and whether training saw it."""
        if user_id is None and self.model.user_embeddings:  # a typed history means nothing to them
            raise RunError(f"{self.name} scores users by their trained embedding, so it has nothing for a new "
                           "user; open this page with a sequential or content run")
        unknown = [item for item in history if item not in self.item_index]
        if unknown:
            raise RunError(f"run {self.run_dir.name} does not know item {unknown[0]!r}")
        indexes = np.array([self.item_index[item] for item in history], dtype=np.int64)
        user = self.user_index[user_id] if user_id is not None else 0  # models without user embeddings ignore it
        scores, items = self.model.recommend(torch.tensor([user]), [indexes], k)
        return [{"item_id": str(self.item_ids[i]), "score": float(s), "trained": bool(self.trained[i])}
                for s, i in zip(scores[0].tolist(), items[0].tolist(), strict=True) if np.isfinite(s)]
