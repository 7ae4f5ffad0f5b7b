"""TIGER's decoder: pre-norm blocks of causal self-attention, attention to the encoder memory, feed-forward.

Two things make beam search cheap on a CPU:

- The memory's keys and values are projected once per user (`Decoder.memory`), not at every decoding step,
  and the G target rows of one memory (a user's beams, or the catalog items `exact_scores` rates) attend to it
  as one query sequence of G x T positions instead of G copies of the memory: each query is attended on its
  own, so the result is the same.
- Decoding one level at a time keeps each layer's self-attention keys and values in a `KVCache`, so every
  step runs the decoder on one new position per beam rather than on the whole prefix again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recommenders.layers import CausalSelfAttention, KVCache, check_heads, merge_heads, split_heads


@dataclass
class Memory:
    """Encoder states as the decoder reads them: each layer's (keys, values), (B, heads, S, d), and which of
    the S positions are not padding, (B, 1, 1, S) as attention masks broadcast."""

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, rows) -> Memory:
        return Memory([(k[rows], v[rows]) for k, v in self.keys_values], self.mask[rows])


class CrossAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        check_heads(hidden, heads)
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def keys_values(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(states).split(states.shape[2], dim=2)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        """x (N, T, hidden), N a multiple of the B memories: row i attends to memory i // (N / B)."""
        N, T, hidden = x.shape
        k, v = keys_values
        q = split_heads(self.q(x).reshape(len(k), -1, hidden), self.heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(merge_heads(y).reshape(N, T, hidden)))


class DecoderBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(hidden), nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.self_attn = CausalSelfAttention(hidden, heads, dropout)
        self.cross_attn = CrossAttention(hidden, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(hidden, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, hidden),
                                nn.Dropout(dropout))

    def forward(self, y: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        y = y + self.self_attn(self.ln1(y), cache=cache)
        y = y + self.cross_attn(self.ln2(y), keys_values, memory_mask)
        return y + self.ff(self.ln3(y))


class Decoder(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int, dropout: float, layers: int):
        super().__init__()
        self.layers = nn.ModuleList([DecoderBlock(hidden, heads, ff, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)

    def memory(self, states: torch.Tensor, pad: torch.Tensor) -> Memory:
        """The encoder states (B, S, hidden) with their padding (B, S), True at padding."""
        return Memory([layer.cross_attn.keys_values(states) for layer in self.layers], ~pad[:, None, None, :])

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.layers]

    def forward(self, y: torch.Tensor, memory: Memory, cache: list[KVCache] | None = None) -> torch.Tensor:
        """States (N, T, hidden) of target positions y: the whole target (teacher forcing), or with `cache`
        the positions after those already decoded."""
        for i, layer in enumerate(self.layers):
            y = layer(y, memory.keys_values[i], memory.mask, None if cache is None else cache[i])
        return self.norm(y)
