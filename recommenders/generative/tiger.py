"""TIGER (Rajput et al. 2023): a generative recommender that writes the semantic ID of the next item.

Items are semantic IDs: short tuples of codes (`seerec quantize`), padded to `levels` codes with an END
code so that IDs of different lengths (3 codes, 3 codes + a dedup level) share one shape. Tokens:

    0 PAD | 1 START | level 0 codes | level 1 codes | ... | hashed user buckets

Each level has its own block of `vocab = codebook_size + 1` tokens (the + 1 is END), so code 5 at level 0
and code 5 at level 1 are different tokens.

- Encoder input: START (or the user's hashed token), then the last `max_items` history items, each as its
  `levels` code tokens, right-aligned so that the most recent item always sits at the same positions.
- Decoder: START, then the target's codes; teacher-forced cross-entropy, one output layer per level over
  that level's codes only.
- Decoding: beam search over `levels` steps (one new decoder position per step, the earlier ones' keys and
  values cached), batched over users, with the prefix trie's mask
  (`recommenders.generative.trie`) added to the logits at every step, so every beam is a catalog item.
  `score()` puts each generated item's log-likelihood in a dense (B, n_items) matrix with -inf elsewhere:
  the shared full-ranking evaluation then counts each item once and masks history as for any model.
  `exact_scores()` scores every catalog item by its log-likelihood, to check the beam against.
- New items: `add_items(codes)` grows the trie (and the item table) in place, without retraining.

The item IDs travel inside the checkpoint as the integer buffer `semantic_ids` (n_items, levels; -1 after an
ID's last code), which the base class keeps for "semantic_ids" models, so `load_run` rebuilds a model that
decodes the same catalog. The network is an encoder of
torch's layers and seerec's own decoder (`recommenders.generative.decoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pipeline.config import Section
from recommenders.base import Recommender, shuffled_batches
from recommenders.evaluate import pad_histories
from recommenders.generative.decoder import Decoder, Memory
from recommenders.generative.semantic_ids import with_codebook_size
from recommenders.generative.trie import ROOT, SemanticIdTrie
from recommenders.layers import KVCache
from recommenders.registry import register

PAD, START = 0, 1


class TigerConfig(Section):
    # Store column with the items' semantic IDs (`seerec quantize`); items without one are never recommended.
    semantic_id_column: str = "semantic_id"
    # TIGER's size is 4+4 layers, d_model 128, 6 heads of 64; torch's layers need d_model % heads == 0,
    # so the default is 4 heads of 32.
    d_model: int = Field(128, ge=8)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    ff: int = Field(1024, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    # The encoder reads the last max_items items of the history, each as its semantic-ID codes.
    max_items: int = Field(20, ge=1)
    # Hashed user tokens prepended to the encoder input (0: none, a START token instead).
    user_buckets: int = Field(2000, ge=0)
    # Codes per level (None: the largest code in the catalog + 1). Set it to the tokenizer's codebook size
    # (or more, for dedup levels) when new items may bring codes the training catalog did not use.
    codebook_size: int | None = Field(None, ge=1)
    # Beam width of the generated ranking (items outside the beam score -inf), and whether the prefix trie
    # constrains decoding to catalog items. exact: score every catalog item by its log-likelihood instead.
    beam_size: int = Field(20, ge=1)
    constrained: bool = True
    scoring: Literal["beam", "exact"] = "beam"
    # Batch training examples of similar history length (shuffled pools), so the encoder runs on less
    # padding. Off: plain shuffled batches.
    length_buckets: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> TigerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"train.tiger.d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        return self


@register("tiger", TigerConfig)
class TIGER(Recommender):
    """Generates the next item's semantic ID with an encoder-decoder and a trie-constrained beam search."""

    item_inputs = "semantic_ids"

    def __init__(self, n_users: int, n_items: int, config: TigerConfig, features: torch.Tensor | None = None):
        config = with_codebook_size(config, features)
        super().__init__(n_users, n_items, config, features)
        d_model, heads, ff, dropout = config.d_model, config.heads, config.ff, config.dropout
        levels, max_items, user_buckets = self.semantic_ids.shape[1], config.max_items, config.user_buckets
        self.levels, self.vocab, self.max_items = levels, config.codebook_size + 1, max_items
        self.user_buckets, self.beam_size = user_buckets, config.beam_size
        self.constrained, self.scoring, self.length_buckets = config.constrained, config.scoring, config.length_buckets
        self.code_offset = 2
        self.user_offset = 2 + levels * self.vocab
        self.emb = nn.Embedding(self.user_offset + user_buckets, d_model, padding_idx=PAD)
        self.enc_pos = nn.Embedding(1 + max_items * levels, d_model)
        self.dec_pos = nn.Embedding(levels, d_model)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, heads, ff, dropout, activation="gelu", batch_first=True,
                                       norm_first=True), config.encoder_layers, norm=nn.LayerNorm(d_model),
            enable_nested_tensor=False)
        self.decoder = Decoder(d_model, heads, ff, dropout, config.decoder_layers)
        self.head = nn.Parameter(torch.randn(levels, self.vocab, d_model) * d_model ** -0.5)  # one per level
        self.drop = nn.Dropout(dropout)
        self._trie: SemanticIdTrie | None = None  # built from the `semantic_ids` buffer when first needed
        self.decode_stats = {"generated": 0, "invalid": 0}

    @property
    def device(self) -> torch.device:  # asked at every decoding step: one lookup, not a walk over all parameters
        return self.emb.weight.device

    # ---- the catalog --------------------------------------------------------------------------------
    def item_codes(self) -> torch.Tensor:
        """(n_items, levels) padded codes: each ID, then END; an item without an ID is all END (never decoded)."""
        codes = self.semantic_ids
        return torch.where(codes >= 0, codes, self.vocab - 1)

    def has_id(self) -> torch.Tensor:
        return self.semantic_ids[:, 0] >= 0

    @property
    def trie(self) -> SemanticIdTrie:
        if self._trie is None:
            self._trie = SemanticIdTrie.from_codes(self.semantic_ids.cpu().numpy(), self.vocab, self.levels)
        return self._trie

    def on_weights_loaded(self) -> None:
        self._trie = None  # the loaded `semantic_ids` buffer may hold another catalog

    def add_items(self, semantic_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Append new items (indexes n_items, n_items+1, ...) and grow the trie; returns their indexes."""
        trie = self.trie
        rows = torch.full((len(semantic_ids), self.levels), -1, dtype=torch.long, device=self.device)
        for row, semantic_id in enumerate(semantic_ids):
            trie.pad(semantic_id)  # checks length and code range before anything changes
            rows[row, :len(semantic_id)] = torch.as_tensor([int(c) for c in semantic_id])
        first = self.n_items
        self.semantic_ids = torch.cat([self.semantic_ids, rows])
        self.n_items += len(semantic_ids)
        for row, semantic_id in enumerate(semantic_ids):
            trie.add(first + row, semantic_id)
        return np.arange(first, self.n_items)

    # ---- the network --------------------------------------------------------------------------------
    def encoder_tokens(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, 1 + N * levels): START or the user token, then the last N items' code tokens (PAD for none)."""
        items = pad_histories(histories, self.max_items).to(self.device)  # (B, N), -1 left padding
        known = (items >= 0) & self.has_id()[items.clamp(min=0)]
        tokens = self.code_tokens(self.item_codes()[items.clamp(min=0)])  # (B, N, levels)
        tokens = tokens.masked_fill(~known[..., None], PAD).flatten(1)
        if self.user_buckets:
            first = self.user_offset + (users.to(self.device).long() * 2654435761) % self.user_buckets
        else:
            first = torch.full((len(tokens),), START, dtype=torch.long, device=self.device)
        return torch.cat([first[:, None], tokens], dim=1)

    def code_tokens(self, codes: torch.Tensor, first_level: int = 0) -> torch.Tensor:
        """The tokens of codes (..., L) of levels first_level .. first_level + L - 1."""
        levels = torch.arange(first_level, first_level + codes.shape[-1], device=self.device)
        return self.code_offset + levels * self.vocab + codes

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, S, d) and the padding mask (B, S) of encoder tokens."""
        S = tokens.shape[1]
        full = self.enc_pos.num_embeddings
        positions = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(full - S + 1, full)]).to(self.device)
        pad = tokens == PAD
        x = self.drop(self.emb(tokens) + self.enc_pos(positions))
        return self.encoder(x, src_key_padding_mask=pad), pad

    def memory(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> Memory:
        """What the decoder reads of these users' histories, projected once for every target decoded."""
        return self.decoder.memory(*self.encode(self.encoder_tokens(users, histories)))

    def decoder_inputs(self, tokens: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        positions = torch.arange(first_position, first_position + tokens.shape[1], device=self.device)
        return self.drop(self.emb(tokens) + self.dec_pos(positions))

    def decode(self, memory: Memory, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (N, t + 1, vocab) for levels 0..t, given the first t codes of each of N targets (teacher
        forcing). N is a multiple of the B memories: target row i reads memory i // (N / B), so the beams of a
        user (or every candidate of `exact_scores`) share its memory instead of a copy per target."""
        start = torch.full((len(prefix), 1), START, dtype=torch.long, device=self.device)
        tokens = torch.cat([start, self.code_tokens(prefix)], dim=1)
        h = self.decoder(self.decoder_inputs(tokens), memory)
        return torch.einsum("btd,tvd->btv", h, self.head[:tokens.shape[1]])

    def decode_step(self, memory: Memory, tokens: torch.Tensor, level: int, cache: list[KVCache]) -> torch.Tensor:
        """Logits (N, vocab) of `level`, given each target's input token (N,) there: START at level 0, then the
        code chosen at the level before. `cache` holds the earlier positions' keys and values and takes these."""
        h = self.decoder(self.decoder_inputs(tokens[:, None], level), memory, cache)[:, 0]
        return h @ self.head[level].T

    # ---- training -----------------------------------------------------------------------------------
    def batches(self, train, batch_size, rng):
        """Every position of every training sequence is an example: its last max_items items -> the next one."""
        has_id = self.has_id().cpu().numpy()
        examples = np.array([(u, p) for u, seq in enumerate(train) for p in range(1, len(seq)) if has_id[seq[p]]],
                            dtype=np.int64).reshape(-1, 2)
        lengths = np.minimum(examples[:, 1], self.max_items)
        codes = self.item_codes()
        for group in shuffled_batches(lengths, batch_size, rng, self.length_buckets):
            chosen = examples[group]
            users = torch.from_numpy(chosen[:, 0]).to(self.device)
            histories = [train[u][max(0, p - self.max_items):p] for u, p in chosen]
            targets = codes[torch.as_tensor([train[u][p] for u, p in chosen], device=self.device)]
            yield {"tokens": self.encoder_tokens(users, histories), "targets": targets}

    def loss(self, batch: dict) -> torch.Tensor:
        memory = self.decoder.memory(*self.encode(batch["tokens"]))
        targets = batch["targets"]
        logits = self.decode(memory, targets[:, :-1])
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))

    # ---- decoding -----------------------------------------------------------------------------------
    @torch.no_grad()
    def beam_search(self, users: torch.Tensor, histories: Sequence[np.ndarray], beam: int | None = None,
                    constrained: bool | None = None, max_sequences: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """(items, scores), each (B, beam): the best `beam` IDs by log-likelihood, best first. An item is -1
        (score -inf) where fewer valid IDs exist than beams, or, without constraints, where the generated ID
        names no catalog item (counted in `decode_stats["invalid"]`)."""
        beam = beam or self.beam_size
        constrained = self.constrained if constrained is None else constrained
        chunk = max(1, max_sequences // beam)  # users per pass: the decoder sees users x beam sequences
        parts = [self._beam(users[s:s + chunk], histories[s:s + chunk], beam, constrained)
                 for s in range(0, len(histories), chunk)]
        items, scores = (torch.cat(p) for p in zip(*parts, strict=True))
        finite = torch.isfinite(scores)
        self.decode_stats["generated"] += int(finite.sum())
        self.decode_stats["invalid"] += int((finite & (items < 0)).sum())
        return items, scores.masked_fill(items < 0, -torch.inf)

    def _beam(self, users, histories, beam: int, constrained: bool) -> tuple[torch.Tensor, torch.Tensor]:
        children, allowed, item_of = self.trie.tensors(self.device)
        memory, cache = self.memory(users, histories), self.decoder.new_cache()
        B, V = len(memory), self.vocab
        scores = torch.full((B, beam), -torch.inf, device=self.device)
        scores[:, 0] = 0.0  # one live beam to start with; the others would only be copies of it
        tokens = torch.full((B * beam,), START, dtype=torch.long, device=self.device)
        node = torch.full((B, beam), ROOT, dtype=torch.long, device=self.device)
        rows = torch.arange(B, device=self.device)[:, None]
        for t in range(self.levels):
            logits = self.decode_step(memory, tokens, t, cache).view(B, beam, V)
            logp = F.log_softmax(logits.float(), dim=-1)
            if constrained:
                logp = logp.masked_fill(~allowed[node], -torch.inf)
            scores, flat = (scores[..., None] + logp).view(B, -1).topk(beam, dim=1)
            parent, code = flat // V, flat % V
            for layer_cache in cache:  # each beam continues from its parent's keys and values
                layer_cache.select((rows * beam + parent).flatten())
            tokens = self.code_tokens(code[..., None], t).flatten()
            node = children[node[rows, parent], code]
        return item_of[node].masked_fill(~torch.isfinite(scores), -1), scores

    @torch.no_grad()
    def exact_scores(self, users: torch.Tensor, histories: Sequence[np.ndarray], chunk: int = 4096) -> torch.Tensor:
        """(B, n_items): every catalog item's log-likelihood (sum over its levels); -inf for items without ID."""
        memory = self.memory(users, histories)
        codes, has_id = self.item_codes(), self.has_id()
        out = torch.full((len(memory), self.n_items), -torch.inf, device=self.device)
        for b in range(len(memory)):
            for s in range(0, self.n_items, chunk):
                target = codes[s:s + chunk]
                n = len(target)
                logits = self.decode(memory[b:b + 1], target[:, :-1])
                logp = F.log_softmax(logits.float(), dim=-1).gather(2, target[..., None]).squeeze(2).sum(1)
                out[b, s:s + n] = logp.masked_fill(~has_id[s:s + n], -torch.inf)
        return out

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        if self.scoring == "exact":
            return self.exact_scores(users, histories)
        items, scores = self.beam_search(users, histories)
        out = torch.full((len(histories), self.n_items), -torch.inf, device=self.device)
        keep = items >= 0
        out[torch.nonzero(keep, as_tuple=True)[0], items[keep]] = scores[keep]
        return out

    def start_evaluation(self) -> None:
        self.decode_stats = {"generated": 0, "invalid": 0}

    def evaluation_report(self) -> dict:
        """Generated IDs and the share that named no catalog item, since `start_evaluation`."""
        generated, invalid = self.decode_stats["generated"], self.decode_stats["invalid"]
        return {"generated_ids": generated, "invalid_ids": invalid,
                "invalid_rate": invalid / generated if generated else 0.0, "constrained": self.constrained,
                "beam_size": self.beam_size, "scoring": self.scoring}
