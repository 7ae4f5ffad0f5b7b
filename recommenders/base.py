"""The contract every recommender keeps (cornac's fit/score surface), plus the batch makers they reuse.

A model is one file: a config class (a `pipeline.config.Section`), a `Recommender` subclass built from
`(n_users, n_items, config, features)`, and `@register(name, Config)` on the class (`recommenders.registry`).
Everything the shared code does with a model goes through the methods below, never through `hasattr`:

What a model declares (class attributes):
- `item_inputs`: what it needs per item: "ids" (nothing), "features" (store vector columns, `train.features`)
  or "semantic_ids" (the store column its config names in `semantic_id_column`). `load_item_inputs` reads
  them from the store; the base class keeps them as a buffer (`features`, float32, or `semantic_ids`, int64),
  so that a checkpoint is self-contained.
- `trainable`: False for models fitted by `prepare` alone (no gradient steps).
- `user_embeddings`: True for models that score a user by a learned per-user embedding, so only users of
  the training data can be ranked (a new user's history alone gives them nothing to score).

What the training loop (`recommenders.train`) calls:
- `prepare(train)`: statistics that need no gradient (popularity counts, the LightGCN graph);
- `batches(train, batch_size, rng)` and `loss(batch)` (also `forward(batch)`, so DDP can wrap any model);
- `on_weights_loaded()`: after every `load_state_dict`, to drop caches derived from the old weights.

What evaluation and serving call:
- `score(users, histories) -> (B, n_items)`: scores of all items for a batch of users. `users` are user
  indexes (for models with user embeddings) and `histories` their item sequences (for sequential and
  content models); every model gets both and uses what it needs;
- `recommend(users, histories, k)`: the top k items, history excluded by default;
- `start_evaluation()` / `evaluation_report()`: `recommenders.evaluate.evaluate` calls the first before it
  ranks; the run writes what the second returns after the test ranking (e.g. a generative model's share of
  invalid IDs) into metrics.json;
- `item_embeddings()`: one vector per item, for export to the store (None where a model has none).

`save(folder)` writes `model.pt` (the `state_dict`) and `model.json` (name, config, sizes); `load(folder)`
rebuilds any registered model from them with `torch.load(weights_only=True)`. Evaluation is not here:
`recommenders.evaluate` ranks what `score` returns.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from pipeline.config import Section
from recommenders.data import RecommenderError
from recommenders.evaluate import pad_histories

ItemInputs = Literal["ids", "features", "semantic_ids"]
MISSING_INPUTS = {
    "features": "model {name} needs item features; name store vector columns in train.features, "
                "e.g. train.features=[text_vec]",
    "semantic_ids": "model {name} needs the items' semantic IDs; run `seerec quantize` and name the store "
                    "column in train.{name}.semantic_id_column",
}


class Recommender(nn.Module, ABC):
    """A recommender: built from its config, trained by the shared loop, ranked by the shared evaluation."""

    name: ClassVar[str]  # set by @register
    config_class: ClassVar[type[Section]]  # set by @register
    item_inputs: ClassVar[ItemInputs] = "ids"
    trainable: ClassVar[bool] = True
    user_embeddings: ClassVar[bool] = False

    def __init__(self, n_users: int, n_items: int, config: Section, features: torch.Tensor | None = None):
        super().__init__()
        if self.item_inputs != "ids" and features is None:
            raise RecommenderError(MISSING_INPUTS[self.item_inputs].format(name=self.name))
        self.n_users, self.n_items, self.config = n_users, n_items, config
        inputs = None if features is None else torch.as_tensor(features)
        if self.item_inputs == "semantic_ids":
            if inputs.is_floating_point():
                raise RecommenderError(f"model {self.name} takes semantic IDs as integer codes, not {inputs.dtype}")
            self.register_buffer("semantic_ids", inputs.long())
            inputs = None
        self.register_buffer("features", None if inputs is None else inputs.float())

    def item_input_buffer(self) -> torch.Tensor | None:
        """The per-item inputs the model was built with (what a checkpoint must be rebuilt with)."""
        return self.semantic_ids if self.item_inputs == "semantic_ids" else self.features

    @property
    def device(self) -> torch.device:
        for tensor in [*self.parameters(), *self.buffers()]:
            return tensor.device
        return torch.device("cpu")

    # ---- item inputs ------------------------------------------------------------------------------------
    @classmethod
    def load_item_inputs(cls, store, config: Section, columns: Sequence[str],
                         item_ids: Sequence[str]) -> tuple[np.ndarray | None, dict]:
        """The per-item input matrix this model is built with, read from the item store, and a report:
        nothing for "ids" models, the `columns` vectors for "features" models, and for "semantic_ids" models
        the IDs in their config's `semantic_id_column`."""
        if cls.item_inputs == "ids":
            return None, {}
        if cls.item_inputs == "semantic_ids":
            from recommenders.generative.semantic_ids import load_semantic_ids

            return load_semantic_ids(store, config.semantic_id_column, item_ids)
        if not columns:
            raise RecommenderError(MISSING_INPUTS["features"].format(name=cls.name))
        from recommenders.features import load_item_features

        return load_item_features(store, columns, item_ids)

    # ---- training ---------------------------------------------------------------------------------------
    def prepare(self, train: Sequence[np.ndarray]) -> None:
        """Fit what needs no gradient. The default does nothing."""

    def batches(self, train: Sequence[np.ndarray], batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
        raise NotImplementedError(f"model {self.name} is not trained by gradient steps")

    def loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError(f"model {self.name} is not trained by gradient steps")

    def forward(self, batch: dict) -> torch.Tensor:
        """The training loss: calling the module computes it, which is what DistributedDataParallel wraps."""
        return self.loss(batch)

    def on_weights_loaded(self) -> None:
        """Called after every `load_state_dict`: drop what was derived from the previous weights."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.on_weights_loaded()
        return result

    # ---- ranking ----------------------------------------------------------------------------------------
    @abstractmethod
    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, n_items) scores of every item for each user; higher ranks first."""

    @torch.no_grad()
    def recommend(self, users: torch.Tensor, histories: Sequence[np.ndarray], k: int = 10,
                  exclude_history: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, item indexes) of the top k items per user; ties go to the lower item index."""
        scores = self.score(users.to(self.device), histories).float()
        if exclude_history and len(histories):
            lengths = torch.tensor([len(h) for h in histories])
            rows = torch.repeat_interleave(torch.arange(len(histories)), lengths).to(scores.device)
            cols = torch.from_numpy(np.concatenate([np.asarray(h, np.int64) for h in histories])).to(scores.device)
            scores[rows, cols] = -torch.inf
        return torch.topk(scores, min(k, self.n_items), dim=1, sorted=True)

    def start_evaluation(self) -> None:
        """Called before each evaluation ranks; models that count something while scoring reset it here."""

    def evaluation_report(self) -> dict | None:
        """What the model observed while scoring since `start_evaluation` (None: nothing to report)."""
        return None

    def item_embeddings(self) -> torch.Tensor | None:
        return None

    # ---- checkpoints ------------------------------------------------------------------------------------
    def save(self, folder: str | Path, **meta) -> None:
        """`model.pt` (the state_dict, on the CPU) and `model.json` (name, config, sizes, plus `meta`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        inputs = self.item_input_buffer()
        about = {"model": self.name, "config": self.config.model_dump(mode="json"), "n_users": self.n_users,
                 "n_items": self.n_items, "item_inputs_shape": None if inputs is None else list(inputs.shape), **meta}
        (folder / "model.json").write_text(json.dumps(about, indent=2))
        torch.save({k: v.cpu() for k, v in self.state_dict().items()}, folder / "model.pt")

    @staticmethod
    def load(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Recommender, dict]:
        """(model in eval mode, the model.json contents) of a folder written by `save`."""
        from recommenders.registry import model_class

        folder = Path(folder)
        if not (folder / "model.json").is_file() or not (folder / "model.pt").is_file():
            raise RecommenderError(f"{folder} holds no saved model (model.json and model.pt are missing)")
        about = json.loads((folder / "model.json").read_text())
        if "config" not in about:
            raise RecommenderError(f"{folder} was saved by an older seerec (its model.json has no config); "
                                   "train it again")
        cls = model_class(about["model"])
        shape = about["item_inputs_shape"]
        dtype = torch.long if cls.item_inputs == "semantic_ids" else torch.float32
        placeholder = torch.zeros(shape, dtype=dtype) if shape else None  # the values come with the state_dict
        model = cls(about["n_users"], about["n_items"], cls.config_class.model_validate(about["config"]),
                    placeholder)
        model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
        return model.to(device).eval(), about


# ---- batch makers shared by several models ---------------------------------------------------------------
BUCKET_POOL = 50  # batches per pool sorted by length: wide enough to bucket, narrow enough to stay random


def trained_items(train: Sequence[np.ndarray], n_items: int, device: torch.device) -> torch.Tensor:
    """(n_items,) bool: the items of at least one training history, the only ones a loss should rank a target
    against (a held-out item that is only ever a negative learns to rank last)."""
    seen = torch.zeros(n_items, dtype=torch.bool, device=device)
    seen[torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.int64) for s in train])).to(device)] = True
    return seen


def shuffled_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     length_buckets: bool = False) -> list[np.ndarray]:
    """Indexes of examples in random batches. With `length_buckets`, the shuffled examples are sorted by
    length within pools of BUCKET_POOL batches, cut into batches and the batches shuffled: a batch is padded
    to its own longest example, so on skewed data (most histories short, a few at the cap) the model runs
    on several times fewer padded positions, while each batch still mixes users from the whole catalogue."""
    order = rng.permutation(len(lengths))
    if not length_buckets:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    groups = []
    pool = BUCKET_POOL * batch_size
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        groups += [chunk[at:at + batch_size] for at in range(0, len(chunk), batch_size)]
    return [groups[i] for i in rng.permutation(len(groups))]


def sequence_batches(train: Sequence[np.ndarray], max_len: int, batch_size: int, rng: np.random.Generator,
                     device: torch.device, length_buckets: bool = False) -> Iterator[dict]:
    """Next-item batches: inputs seq[:-1] and targets seq[1:], the last max_len of each, left-padded with -1.

    Each batch carries `positions`, the number of target positions a batch of its size has on average over
    the epoch: a loss summed over positions and divided by it weighs every position alike whichever batch
    it falls in (with length buckets, a per-batch mean would favour the short-sequence batches)."""
    users = np.array([u for u, s in enumerate(train) if len(s) >= 2], dtype=np.int64)
    lengths = np.array([min(len(train[u]) - 1, max_len) for u in users], dtype=np.int64)
    per_user = float(lengths.mean()) if len(users) else 0.0
    for group in shuffled_batches(lengths, batch_size, rng, length_buckets):
        chosen = users[group]
        inputs = pad_histories([train[u][:-1] for u in chosen], max_len)
        targets = pad_histories([train[u][1:] for u in chosen], max_len)
        yield {"users": torch.from_numpy(chosen).to(device), "inputs": inputs.to(device),
               "targets": targets.to(device), "positions": per_user * len(chosen)}


def pair_batches(train: Sequence[np.ndarray], n_items: int, batch_size: int, rng: np.random.Generator,
                 device: torch.device) -> Iterator[dict]:
    """(user, positive, negative) triples over all training interactions, one uniform negative each.

    A negative that hits one of the user's training items is redrawn once (rarely twice needed at these
    densities)."""
    users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(train)])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train])
    seen = np.unique(users * n_items + items)
    order = rng.permutation(len(users))
    users, items = users[order], items[order]
    negatives = rng.integers(0, n_items, len(users))
    clash = np.isin(users * n_items + negatives, seen)
    negatives[clash] = rng.integers(0, n_items, int(clash.sum()))
    for start in range(0, len(users), batch_size):
        window = slice(start, start + batch_size)
        yield {"users": torch.from_numpy(users[window]).to(device), "pos": torch.from_numpy(items[window]).to(device),
               "neg": torch.from_numpy(negatives[window]).to(device)}
