"""RPG-style parallel generation of long semantic IDs (Hou et al. 2025): every digit of the next item at once.

Items are long semantic IDs (`seerec quantize` with `quantize.tokenizer=opq`, e.g. 32 digits of 256 codes),
whose digits, unlike TIGER's levels, carry no order. The model:

- Item tokens: an item's input vector is the sum of its digits' embeddings over sqrt(levels) (one table of
  `levels x vocab` rows; digit d's code c is row d * vocab + c). There is no per-item embedding, so an item added after
  training, once it has an ID, is a token the model already knows how to read and to predict.
- Encoder: SASRec's causal Transformer (`recommenders.models.sasrec`; blocks, position embeddings and the
  shared next-item batches) over the last `max_len` items of the history.
- Multi-token head: one residual projection per digit turns the hidden state into a query for that digit;
  its logits are the cosine similarities to that digit's code embeddings divided by `temperature`. The loss
  is the sum over digits of their cross-entropies, at every position (all digits predicted in parallel).
  `objective: digits+items` adds an item-level cross-entropy whose item logits are the means of their
  digits' logits, which rank items as the scoring does (a digit's normalizer is the same for every item):
  one softmax over items instead of `levels` independent ones over codes, weighted as `levels` digits. Each
  target is ranked against the batch's targets and `item_negatives` uniform catalog items (the whole catalog
  costs as much again as the digit logits on a CPU).
- Scoring: an item's score is the sum of its digits' log-probabilities. `scoring: exact` sums them for every
  catalog item (one sparse product with the catalog's one-hot codes): the exact ranking. `scoring: graph` is the fast
  path for large catalogs: a kNN graph links each item to the `graph_neighbors` items sharing most digits
  with it; decoding starts from the most popular training items and the neighbours of the user's last item,
  then `graph_steps` times scores the neighbours of the current `beam_size` best and keeps the best. Only
  catalog items are ever scored, so no generated ID is invalid; items outside the final beam score -inf.

Digits after an ID's end (IDs of mixed length) use the extra code `vocab - 1`, as TIGER's END.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recommenders.data import RecommenderError
from recommenders.evaluate import pad_histories
from recommenders.generative.semantic_ids import with_codebook_size
from recommenders.models.sasrec import SASRec, SASRecConfig
from recommenders.registry import register


class RPGConfig(SASRecConfig):
    # Store column with the items' long semantic IDs (`seerec quantize`, quantize.tokenizer=opq).
    semantic_id_column: str = "semantic_id"
    # The encoder is SASRec's (its hidden, layers, heads, dropout, max_len, length_buckets), here 128 wide
    # with dropout 0.3 by default.
    hidden: int = Field(128, ge=8)
    dropout: float = Field(0.3, ge=0, lt=1)
    # RPG's objective is its own (a cross-entropy per digit); this SASRec setting is fixed.
    loss: Literal["ce"] = "ce"
    # Codes per digit (None: the largest code in the catalog + 1). Set it to the tokenizer's codebook size
    # when new items may bring codes the training catalog did not use.
    codebook_size: int | None = Field(None, ge=1)
    # Digit logits are cosine similarities divided by this (small: sharp per-digit distributions).
    temperature: float = Field(0.07, gt=0)
    # digits: a cross-entropy per digit; digits+items: plus a softmax over items of their mean digit logits
    # (on Amazon Beauty, better at equal training time: BENCHMARKS.md, "RPG's item objective").
    objective: Literal["digits", "digits+items"] = "digits+items"
    # digits+items: uniformly drawn catalog items each target is ranked against, besides the batch's targets.
    item_negatives: int = Field(512, ge=1)
    # exact: every catalog item's summed digit log-probability; graph: a walk over the code kNN graph.
    scoring: Literal["exact", "graph"] = "exact"
    # graph: items kept per step, which are the candidates of the final ranking.
    beam_size: int = Field(50, ge=1)
    # graph: neighbours per item in the kNN graph over codes (the items sharing most digits).
    graph_neighbors: int = Field(50, ge=1)
    # graph: expansion steps after the start (popular items and the last history item's neighbours).
    graph_steps: int = Field(3, ge=0)


@register("rpg", RPGConfig)
class RPG(SASRec):
    """Predicts all digits of the next item's long semantic ID in parallel; ranks catalog items by their sum."""

    item_inputs = "semantic_ids"

    def __init__(self, n_users: int, n_items: int, config: RPGConfig, features: torch.Tensor | None = None):
        config = with_codebook_size(config, features)
        super().__init__(n_users, n_items, config, features)
        self.item_emb = None  # items are their digits
        self.levels, self.vocab = self.semantic_ids.shape[1], config.codebook_size + 1
        self.temperature, self.scoring = config.temperature, config.scoring
        self.objective, self.item_negatives = config.objective, config.item_negatives
        self.beam_size, self.graph_neighbors, self.graph_steps = (config.beam_size, config.graph_neighbors,
                                                                  config.graph_steps)
        self.digit_emb = nn.Embedding(self.levels * self.vocab, self.hidden)
        # SASRec's item start (std hidden^-1/2). An item vector sums its digits over sqrt(levels), which keeps that
        # scale; a mean would need digits sqrt(levels) times larger, which Adam's steps of about `lr` would then
        # turn sqrt(levels) times slower (the output logits are cosines: only the digits' directions count).
        nn.init.normal_(self.digit_emb.weight, std=self.hidden ** -0.5)
        self.heads = nn.Parameter(torch.zeros(self.levels, self.hidden, self.hidden))  # residual, start at identity
        self.register_buffer("popularity", torch.zeros(n_items))
        self._graph: torch.Tensor | None = None  # (n_items, graph_neighbors), built when first needed
        self.scored = {"users": 0, "items": 0}

    # ---- the catalog --------------------------------------------------------------------------------
    def item_codes(self) -> torch.Tensor:
        """(n_items, levels) codes, `vocab - 1` after an ID's last digit; all `vocab - 1` for an item without ID."""
        return torch.where(self.semantic_ids >= 0, self.semantic_ids, self.vocab - 1)

    def has_id(self) -> torch.Tensor:
        return self.semantic_ids[:, 0] >= 0

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """(..., hidden): each item's digit embeddings summed over sqrt(levels) (zero for an item without an ID)."""
        offsets = torch.arange(self.levels, device=items.device) * self.vocab
        digits = self.digit_emb(self.item_codes()[items] + offsets).sum(-2) * self.levels ** -0.5
        return digits * self.has_id()[items][..., None]

    def item_table(self) -> torch.Tensor:
        return self.item_vectors(torch.arange(self.n_items, device=self.device))

    def encode_items(self, inputs: torch.Tensor) -> torch.Tensor:
        """SASRec's hidden states (B, L, hidden) of left-padded item sequences, embedding only the items they
        hold (a batch holds far fewer than the catalog, and each item is `levels` embedding lookups)."""
        items, index = torch.unique(inputs.clamp(min=0), return_inverse=True)
        return self.encode(index.masked_fill(inputs < 0, -1), self.item_vectors(items))

    def prepare(self, train: Sequence[np.ndarray]) -> None:
        """Training interactions per item: the graph walk starts from the most popular items."""
        counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in train]), minlength=self.n_items)
        self.popularity.copy_(torch.as_tensor(counts[:self.n_items], dtype=torch.float32))

    def on_weights_loaded(self) -> None:
        self._graph = None  # the loaded `semantic_ids` buffer may hold another catalog

    def add_items(self, semantic_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Append new items (indexes n_items, n_items+1, ...) with these IDs; returns their indexes."""
        rows = torch.full((len(semantic_ids), self.levels), -1, dtype=torch.long, device=self.device)
        for row, semantic_id in enumerate(semantic_ids):
            codes = [int(c) for c in semantic_id]
            if not 0 < len(codes) <= self.levels or not all(0 <= c < self.vocab - 1 for c in codes):
                raise RecommenderError(f"new item {row} has semantic ID {codes}; this model takes 1 to {self.levels} "
                                       f"digits in 0..{self.vocab - 2} (train.rpg.codebook_size)")
            rows[row, :len(codes)] = torch.as_tensor(codes)
        first = self.n_items
        self.semantic_ids = torch.cat([self.semantic_ids, rows])
        self.popularity = torch.cat([self.popularity, torch.zeros(len(rows), device=self.device)])
        self.n_items += len(rows)
        self._graph = None
        return np.arange(first, self.n_items)

    # ---- the multi-token head ----------------------------------------------------------------------
    def digit_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, levels, vocab) logits of every digit from hidden states (N, hidden)."""
        queries = F.normalize(hidden[:, None] + torch.einsum("nh,dhk->ndk", hidden, self.heads), dim=-1)
        codes = F.normalize(self.digit_emb.weight.view(self.levels, self.vocab, self.hidden), dim=-1)
        # The temperature scales the queries, not the logits: `levels x hidden` products per row, not `levels x vocab`.
        return torch.einsum("ndh,dvh->ndv", queries / self.temperature, codes)

    def loss(self, batch: dict) -> torch.Tensor:
        hidden = self.encode_items(batch["inputs"])
        targets = batch["targets"]
        keep = targets >= 0
        keep[keep.clone()] = self.has_id()[targets[keep]]  # items without an ID cannot be predicted
        logits, kept = self.digit_logits(hidden[keep]), targets[keep]
        codes = self.item_codes()[kept]
        # Summed over digits and positions, then divided by the epoch's mean positions per batch (see batches).
        loss = F.cross_entropy(logits.reshape(-1, self.vocab), codes.reshape(-1), reduction="sum")
        if self.objective == "digits+items":
            drawn = torch.randint(0, self.n_items, (self.item_negatives,), device=self.device)
            candidates, index = torch.unique(torch.cat([kept, drawn]), return_inverse=True)
            items = self.summed(logits, candidates) / self.levels
            items = items.masked_fill(~self.has_id()[candidates], -torch.inf)
            loss = loss + self.levels * F.cross_entropy(items, index[:len(kept)], reduction="sum")
        return loss / batch["positions"]

    def code_matrix(self, items: torch.Tensor) -> torch.Tensor:
        """Sparse CSR (len(items), levels * vocab) with a 1 at each of the items' digit codes."""
        n, offsets = len(items), torch.arange(self.levels, device=self.device) * self.vocab
        with warnings.catch_warnings():  # torch calls its CSR support beta; the product here is all it is asked
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
            return torch.sparse_csr_tensor(torch.arange(0, n * self.levels + 1, self.levels, device=self.device),
                                           (self.item_codes()[items] + offsets).flatten(),
                                           torch.ones(n * self.levels, device=self.device),
                                           (n, self.levels * self.vocab),
                                           check_invariants=False)  # sorted by construction: digit after digit

    def summed(self, digit_values: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(N, len(items)): each item's sum of its digits' values (N, levels, vocab), one sparse product."""
        return (self.code_matrix(items) @ digit_values.flatten(1).T).T

    # ---- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def digit_log_probs(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, levels, vocab) log-probabilities of the next item's digits."""
        inputs = pad_histories(histories, self.max_len).to(self.device)
        return F.log_softmax(self.digit_logits(self.encode_items(inputs)[:, -1]).float(), dim=-1)

    def item_scores(self, log_probs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, C) summed digit log-probabilities of candidate items (B, C); -inf for items without an ID."""
        codes = self.item_codes()[items].transpose(1, 2)  # (B, levels, C)
        scores = torch.gather(log_probs, 2, codes).sum(1)
        return scores.masked_fill(~self.has_id()[items], -torch.inf)

    def exact_scores(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(B, n_items): every catalog item's score."""
        catalog = torch.arange(self.n_items, device=self.device)
        return self.summed(log_probs, catalog).masked_fill(~self.has_id(), -torch.inf)

    @property
    def graph(self) -> torch.Tensor:
        """(n_items, k) neighbours of each item: the items with an ID sharing most digits with it."""
        if self._graph is None:
            # Shared digits = one-hot(codes) · one-hot(codes)ᵀ: a sparse product, one chunk of items at a time.
            by_code = self.code_matrix(torch.arange(self.n_items, device=self.device)).t()
            valid = self.has_id()
            k = min(self.graph_neighbors, max(1, self.n_items - 1))
            parts = []
            for start in range(0, self.n_items, 1024):
                chunk = torch.arange(start, min(start + 1024, self.n_items), device=self.device)
                shared = (self.code_matrix(chunk) @ by_code).to_dense()  # (chunk, n_items)
                shared[:, ~valid] = -1.0
                shared[torch.arange(len(chunk), device=self.device), chunk] = -1.0  # not itself
                parts.append(torch.topk(shared, k).indices)
            self._graph = torch.cat(parts)
        return self._graph

    def graph_decode(self, log_probs: torch.Tensor, histories: Sequence[np.ndarray],
                     beam: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(items, scores), each (B, beam) best first: a beam walk over the code graph (see the module doc)."""
        beam = min(beam or self.beam_size, self.n_items)
        B, graph = len(log_probs), self.graph
        popular = torch.topk(self.popularity.masked_fill(~self.has_id(), -1.0), beam).indices
        last = pad_histories(histories, 1).to(self.device)[:, 0].clamp(min=0)
        items, scores = self._keep_best(log_probs, torch.cat([popular.expand(B, beam), graph[last]], dim=1), beam)
        visited = popular.shape[0] + graph.shape[1]
        for _ in range(self.graph_steps):
            items, scores = self._keep_best(log_probs, torch.cat([items, graph[items].flatten(1)], dim=1), beam)
            visited += items.shape[1] * (1 + graph.shape[1])
        self.scored["items"] += visited * B
        return items, scores

    def _keep_best(self, log_probs: torch.Tensor, candidates: torch.Tensor,
                   beam: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best `beam` distinct candidates (B, C) per row and their scores; a repeat scores -inf."""
        candidates, _ = torch.sort(candidates, dim=1)
        scores = self.item_scores(log_probs, candidates)
        scores[:, 1:] = scores[:, 1:].masked_fill(candidates[:, 1:] == candidates[:, :-1], -torch.inf)
        scores, order = torch.topk(scores, min(beam, candidates.shape[1]), dim=1)
        return torch.gather(candidates, 1, order), scores

    @torch.no_grad()
    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        log_probs = self.digit_log_probs(histories)
        self.scored["users"] += len(histories)
        if self.scoring == "exact":
            self.scored["items"] += len(histories) * self.n_items
            return self.exact_scores(log_probs)
        items, scores = self.graph_decode(log_probs, histories)
        out = torch.full((len(histories), self.n_items), -torch.inf, device=self.device)
        return out.scatter_reduce_(1, items, scores, reduce="amax")  # a repeat (scored -inf) keeps the real score

    def start_evaluation(self) -> None:
        self.scored = {"users": 0, "items": 0}

    def evaluation_report(self) -> dict:
        """How many item scores decoding computed per user (the catalog size for exact scoring)."""
        users = self.scored["users"]
        return {"scoring": self.scoring, "beam_size": self.beam_size, "users": users,
                "items_scored_per_user": self.scored["items"] / users if users else 0.0}
