"""Serving a trained run: top-k items under their real ids, for a known user, a new user's history or a batch.

`Server.from_run(run_dir)` loads the model of a run folder with the run's id maps and histories
(`recommenders.runs.load_serving`). A generative model also takes the store items that received semantic IDs
after training (`add_new_items`), so those are recommendable without retraining. `Server.rows(users,
histories)` ranks a batch and returns one row per recommendation (user_id, rank 1..k, item_id, score);
a user with nothing to recommend gets one row with a `note` instead, so a batch never stops for one user.
The explorer's user pages are served by the same class (`history`, `unknown`, `in_training` are theirs).
`BatchRecommender` is the same as a callable class over batches of user indexes (what a Ray Data actor holds),
built from the run folder's files (`run_files`) rather than its path, so actors on other nodes can load it.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from recommenders.base import Recommender
from recommenders.data import RecommenderError
from recommenders.runs import ServingData, load_run, load_serving
from recommenders.train import resolve_device

log = logging.getLogger("seerec.recommend")

OUTPUT_SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                           ("score", pa.float32()), ("note", pa.string())])
NO_HISTORY = "the user has no interactions in the run's data"
NOTHING_LEFT = "no item is left to recommend (every rankable item is in the user's history)"


@dataclass
class Server:
    model: Recommender
    data: ServingData
    item_ids: np.ndarray  # item index -> id, the run's items followed by any added after training
    user_ids: np.ndarray
    run_dir: Path

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Server:
        data = load_serving(run_dir)
        model, _ = load_run(run_dir, str(resolve_device(device)))
        item_ids = list(data.item_ids)
        if model.item_inputs == "semantic_ids":
            from pipeline.store import ItemStore
            from recommenders.generative.semantic_ids import add_new_items

            item_ids += add_new_items(model, ItemStore(data.config.store), model.config.semantic_id_column, item_ids)
        return cls(model, data, np.array(item_ids, dtype=object), np.array(data.user_ids, dtype=object),
                   Path(run_dir))

    # ---- resolving ids ------------------------------------------------------------------------------------
    @functools.cached_property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def user_index(self, user_id: str) -> int:
        found = np.flatnonzero(self.user_ids == user_id)
        if not len(found):
            raise RecommenderError(f"user {user_id!r} is not in run {self.run_dir.name} ({len(self.user_ids)} "
                                   "users); a new user is ranked from a history of item ids instead")
        return int(found[0])

    def history(self, user_id: str) -> list[str]:
        """A known user's items in the run's data, oldest first (what `for_user` excludes from the ranking)."""
        return [str(i) for i in self.item_ids[self.data.histories[self.user_index(user_id)]]]

    def unknown(self, item_ids: Sequence[str]) -> list[str]:
        """The ids the run cannot rank from: not in its items (nor added after training)."""
        return [i for i in item_ids if i not in self.item_index]

    def in_training(self, item_id: str) -> bool | None:
        """Whether a training history of the run held the item; None for a folder without trained_items.json."""
        trained = self.data.trained_items
        return None if trained is None else item_id in trained

    def history_indexes(self, item_ids: Sequence[str]) -> np.ndarray:
        """Item indexes of a new user's history; unknown ids are named in a warning (all unknown: an error)."""
        item_ids = [i.strip() for i in item_ids if i.strip()]
        if not item_ids:
            raise RecommenderError("the history is empty; give item ids like --history 12,40,7")
        unknown = self.unknown(item_ids)
        if len(unknown) == len(item_ids):
            raise RecommenderError(f"none of the history's items is in run {self.run_dir.name}'s catalog: "
                                   f"{', '.join(unknown[:10])}")
        if unknown:
            log.warning("%d history items are not in the run's catalog and are ignored: %s", len(unknown),
                        ", ".join(unknown[:10]))
        if self.model.user_embeddings:
            raise RecommenderError(f"model {self.model.name} scores users by embeddings learned in training, so it "
                                   "cannot rank a new user from a history; ask for one of the run's users, or use a "
                                   "run of a sequential or content model")
        return np.array([self.item_index[i] for i in item_ids if i in self.item_index], dtype=np.int64)

    # ---- ranking ------------------------------------------------------------------------------------------
    def rows(self, users: np.ndarray, histories: Sequence[np.ndarray], user_ids: Sequence[str], k: int,
             exclude_seen: bool = True) -> pa.Table:
        """OUTPUT_SCHEMA rows for a batch: each user's top k (fewer where fewer items score), or one note."""
        users = np.asarray(users, dtype=np.int64)
        user_ids = np.asarray(user_ids, dtype=object)
        empty = np.array([len(h) == 0 for h in histories], dtype=bool)
        ranked = np.flatnonzero(~empty)
        parts, noted = [], [(u, NO_HISTORY) for u in user_ids[empty]]
        if len(ranked):
            scores, items = self.model.recommend(torch.from_numpy(users[ranked]), [histories[i] for i in ranked], k,
                                                 exclude_history=exclude_seen)
            scores, items = scores.float().cpu().numpy(), items.cpu().numpy()
            finite = np.isfinite(scores)
            row, col = np.nonzero(finite)
            parts.append(pa.table({"user_id": pa.array(user_ids[ranked][row], pa.string()),
                                   "rank": pa.array(col + 1, pa.int32()),
                                   "item_id": pa.array(self.item_ids[items[row, col]], pa.string()),
                                   "score": pa.array(scores[row, col], pa.float32()),
                                   "note": pa.nulls(len(row), pa.string())}))
            noted += [(u, NOTHING_LEFT) for u in user_ids[ranked][~finite.any(axis=1)]]
        if noted:
            parts.append(pa.table({"user_id": pa.array([u for u, _ in noted], pa.string()),
                                   "rank": pa.nulls(len(noted), pa.int32()),
                                   "item_id": pa.nulls(len(noted), pa.string()),
                                   "score": pa.nulls(len(noted), pa.float32()),
                                   "note": pa.array([n for _, n in noted], pa.string())}))
        return pa.concat_tables(parts) if parts else OUTPUT_SCHEMA.empty_table()

    def for_user(self, user_id: str, k: int, exclude_seen: bool = True) -> pa.Table:
        index = self.user_index(user_id)
        return self.rows(np.array([index]), [self.data.histories[index]], [user_id], k, exclude_seen)

    def for_history(self, item_ids: Sequence[str], k: int, exclude_seen: bool = True) -> pa.Table:
        history = self.history_indexes(item_ids)
        # A new user has no index of their own; models that ignore user indexes (or hash them) take the next one.
        return self.rows(np.array([len(self.user_ids)]), [history], [None], k, exclude_seen)  # user_id: null

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """item id -> title from the run's item store, where it has them (none when there is no store)."""
        from pipeline.schema import KEY
        from pipeline.store import ItemStore

        store = ItemStore(self.data.config.store)
        if not item_ids or not store.exists() or "title" not in store.schema.names:
            return {}
        table = store.get(list(item_ids), [KEY, "title"])
        return {k: t for k, t in zip(table[KEY].to_pylist(), table["title"].to_pylist(), strict=True) if t}


SERVED_FILES = ("model.json", "model.pt", "items.json", "users.json", "histories.parquet", "config.yaml")


def run_files(run_dir: str | Path) -> dict[str, bytes]:
    """The files of a run folder that serving reads, as bytes: they travel with a job's actors, so a worker
    node needs no access to the driver's disk."""
    load_serving(run_dir)  # an unusable folder is one sentence here, on the driver
    return {name: (Path(run_dir) / name).read_bytes() for name in SERVED_FILES}


class BatchRecommender:
    """Holds one run's model; called on batches of user indexes (column `id`), returns OUTPUT_SCHEMA rows.

    Built from `run_files`: the actor writes them to its own temporary folder and loads the run from there."""

    def __init__(self, files: dict[str, bytes], name: str, k: int, exclude_seen: bool = True, device: str = "cpu",
                 cpu_threads: int | None = None):
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.folder = tempfile.TemporaryDirectory(prefix="seerec-run-")
        run_dir = Path(self.folder.name) / name
        run_dir.mkdir()
        for file, content in files.items():
            (run_dir / file).write_bytes(content)
        self.server = Server.from_run(run_dir, device)
        self.k, self.exclude_seen = k, exclude_seen

    def __call__(self, batch: pa.Table) -> pa.Table:
        users = batch["id"].to_numpy().astype(np.int64)
        server = self.server
        return server.rows(users, [server.data.histories[u] for u in users], server.user_ids[users], self.k,
                           self.exclude_seen)
