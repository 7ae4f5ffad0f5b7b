"""Attention shared by the sequential models: SASRec's blocks and TIGER's decoder both use `CausalSelfAttention`.

Tensors are batch first: (B, L, hidden) in and out, (B, heads, L, hidden / heads) inside, as
`F.scaled_dot_product_attention` takes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H) -> (B, heads, L, H / heads)."""
    B, L, H = x.shape
    return x.view(B, L, heads, H // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads * d)."""
    B, heads, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, heads * d)


def check_heads(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")


class KVCache:
    """One attention layer's keys and values of the positions decoded so far. Decoding one position at a
    time then projects only the new position instead of the whole prefix again at every step."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' keys and values; returns those of every position so far."""
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values

    def select(self, rows: torch.Tensor) -> None:
        """Keep the given rows, in that order (a beam search keeps the parents of its surviving beams)."""
        self.keys, self.values = self.keys[rows], self.values[rows]


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        check_heads(hidden, heads)
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """`mask`: which keys each position may attend to (True: allowed), e.g. causal and not padding; None:
        causal. With a `cache`, the positions of `x` come after the cached ones and see all of them."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).split(x.shape[2], dim=2))
        if cache is not None:
            k, v = cache.extend(k, v)
        if mask is None and q.shape[2] > 1:
            L, S = q.shape[2], k.shape[2]
            mask = torch.ones(L, S, dtype=torch.bool, device=x.device).tril(S - L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(merge_heads(y)))
