"""SASRec (Kang & McAuley 2018): a causal Transformer over the user's last `max_len` items.

The hidden state at each position predicts the next item by a dot product with the item embedding table
(shared between input and output). Two losses:

- "ce" (default): softmax cross-entropy over all items at every position. This full-softmax variant is the
  one that reaches NDCG@10 around .05 on Amazon Beauty in recent reproductions, well above the original.
- "bce": the 2018 paper's loss, binary cross-entropy of the target against one uniform negative.

Sequences are left-padded with -1, so the most recent item is always in the last column and gets the
last position embedding. Subclasses change the item representation by overriding `item_table()`
(see sasrec_content.py); the blocks below are shared, not copied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import Section
from recommenders.base import Recommender, sequence_batches
from recommenders.evaluate import pad_histories
from recommenders.layers import CausalSelfAttention
from recommenders.registry import register


class SASRecConfig(Section):
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(50, ge=2)
    # ce: softmax over all items (the strong variant); bce: one sampled negative per position (2018 paper).
    loss: Literal["ce", "bce"] = "ce"
    # Batch users of similar history length (shuffled pools), so batches carry less padding (Amazon Beauty,
    # 2 CPU cores: 27 s an epoch instead of 40); the loss still weighs every position alike. Off: plain batches.
    length_buckets: bool = True


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: causal self-attention, then a position-wise feed-forward net."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


@register("sasrec", SASRecConfig)
class SASRec(Recommender):
    """A causal Transformer over the user's last items predicts the next item."""

    def __init__(self, n_users: int, n_items: int, config: SASRecConfig, features: torch.Tensor | None = None):
        super().__init__(n_users, n_items, config, features)
        hidden = config.hidden
        self.hidden, self.max_len, self.loss_kind = hidden, config.max_len, config.loss
        self.length_buckets = config.length_buckets
        self.item_emb: nn.Embedding | None = nn.Embedding(n_items, hidden)
        nn.init.normal_(self.item_emb.weight, std=hidden ** -0.5)
        self.pos_emb = nn.Embedding(config.max_len, hidden)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(hidden, config.heads, config.dropout) for _ in range(config.layers)])
        self.ln_f = nn.LayerNorm(hidden)
        # Items the training loss may rank a target against (None: all). Not a buffer: only training reads it.
        self.train_candidates: torch.Tensor | None = None

    def item_table(self) -> torch.Tensor:
        """(n_items, hidden): each item's input embedding, also its output embedding."""
        return self.item_emb.weight

    def encode(self, inputs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, hidden) of left-padded item sequences (pads are -1)."""
        B, L = inputs.shape
        valid = inputs >= 0
        x = table[inputs.clamp(min=0)] * math.sqrt(self.hidden)
        x = x + self.pos_emb(torch.arange(self.max_len - L, self.max_len, device=inputs.device))
        x = self.drop(x) * valid[..., None]
        causal = torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril()
        # Attend to earlier real items, and always to oneself so that a padding row never sees no key at all.
        mask = (causal & valid[:, None, :]) | torch.eye(L, dtype=torch.bool, device=inputs.device)
        mask = mask[:, None]  # (B, 1, L, L), broadcast over heads
        for block in self.blocks:
            x = block(x, mask) * valid[..., None]
        return self.ln_f(x)

    def batches(self, train, batch_size, rng):
        return sequence_batches(train, self.max_len, batch_size, rng, self.device, self.length_buckets)

    def loss(self, batch: dict) -> torch.Tensor:
        table = self.item_table()
        hidden = self.encode(batch["inputs"], table)
        targets = batch["targets"]
        keep = targets >= 0
        h, t = hidden[keep], targets[keep]
        if self.loss_kind == "ce":  # summed, then divided by the epoch's mean positions per batch (see batches)
            logits = h @ table.T
            if self.train_candidates is not None:
                logits = logits.masked_fill(~self.train_candidates, float("-inf"))
            return F.cross_entropy(logits, t, reduction="sum") / batch["positions"]
        if self.train_candidates is None:
            negatives = torch.randint(0, self.n_items, t.shape, device=t.device)
        else:
            pool = self.train_candidates.nonzero().squeeze(1)
            negatives = pool[torch.randint(0, len(pool), t.shape, device=t.device)]
        pos = (h * table[t]).sum(-1)
        neg = (h * table[negatives]).sum(-1)
        return F.binary_cross_entropy_with_logits(torch.cat([pos, neg]),
                                                  torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]),
                                                  reduction="sum") / (2 * batch["positions"])

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        table = self.item_table()
        inputs = pad_histories(histories, self.max_len).to(self.device)
        return self.encode(inputs, table)[:, -1] @ table.T

    def item_embeddings(self) -> torch.Tensor:
        return self.item_table()
