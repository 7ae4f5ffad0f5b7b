"""A prefix trie over the catalog's semantic IDs, for constrained decoding.

Semantic IDs may have different lengths (e.g. 3 codes from one tokenizer, 3 codes + a dedup level from
another). Every ID is padded to `levels` codes with an END code (the last code of the vocabulary), so that every
item is a path of the same depth and an ID that is a prefix of a longer one stays a distinct path.

The trie lives in Python dicts (the source of truth, so `add` grows it in place, item by item) and is
materialised on demand as three tensors for batched decoding:

- `children`: (n_nodes, vocab) long, the child node of each (node, code), 0 where there is none;
- `allowed`:  (n_nodes, vocab) bool, `children > 0`: the logits mask for the next code;
- `item_of`:  (n_nodes,) long, the item index at a leaf, -1 elsewhere.

Node 0 is a dead node (no children, no item): an invalid prefix walks into it and stays there, so an
unconstrained decoder's invalid IDs are found without any special case. Node 1 is the root.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger("seerec.recommenders")

DEAD, ROOT = 0, 1


class SemanticIdTrie:
    def __init__(self, levels: int, vocab: int):
        """`levels` codes per (padded) ID; codes are 0..vocab-2 and vocab-1 is the END padding code."""
        self.levels, self.vocab = levels, vocab
        self.end = vocab - 1
        self._children: list[dict[int, int]] = [{}, {}]  # dead node, root
        self._item_of: list[int] = [-1, -1]
        self._tensors: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.n_items = 0
        self.duplicates = 0

    # ---- building and growing ----------------------------------------------------------------------
    def pad(self, semantic_id) -> list[int]:
        """An ID as `levels` codes: its own codes, then END."""
        codes = [int(c) for c in semantic_id]
        if len(codes) > self.levels:
            raise ValueError(f"semantic ID {tuple(codes)} has {len(codes)} codes; this model decodes {self.levels}")
        if any(c < 0 or c >= self.end for c in codes):
            raise ValueError(f"semantic ID {tuple(codes)} has a code outside 0..{self.end - 1}; this model was "
                             f"built for codebooks of {self.end} codes (set train.tiger.codebook_size higher)")
        return codes + [self.end] * (self.levels - len(codes))

    def add(self, item: int, semantic_id) -> bool:
        """Insert one item; False (and a warning) if another item already holds this exact ID."""
        node = ROOT
        for code in self.pad(semantic_id):
            child = self._children[node].get(code)
            if child is None:
                child = len(self._children)
                self._children.append({})
                self._item_of.append(-1)
                self._children[node][code] = child
            node = child
        if self._item_of[node] >= 0:
            self.duplicates += 1
            log.warning("items %d and %d share the semantic ID %s; only item %d can be generated",
                        self._item_of[node], item, tuple(int(c) for c in semantic_id), self._item_of[node])
            return False
        self._item_of[node] = int(item)
        self.n_items += 1
        self._tensors.clear()
        return True

    @classmethod
    def from_codes(cls, codes: np.ndarray, vocab: int, levels: int | None = None) -> SemanticIdTrie:
        """From an (n_items, L) matrix with -1 after each ID's last code; an all -1 row (no ID) is skipped."""
        codes = np.asarray(codes, dtype=np.int64)
        trie = cls(levels or codes.shape[1], vocab)
        for item, row in enumerate(codes.tolist()):
            semantic_id = [c for c in row if c >= 0]
            if semantic_id:
                trie.add(item, semantic_id)
        return trie

    # ---- batched lookups ----------------------------------------------------------------------------
    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        if device not in self._tensors:
            children = np.zeros((len(self._children), self.vocab), dtype=np.int64)
            for node, table in enumerate(self._children):
                if table:
                    children[node, list(table)] = list(table.values())
            children_t = torch.from_numpy(children).to(device)
            item_of = torch.tensor(self._item_of, dtype=torch.long, device=device)
            self._tensors[device] = (children_t, children_t > 0, item_of)
        return self._tensors[device]

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """The node of each (..., t) prefix of padded codes (DEAD for a prefix no item has)."""
        children, _, _ = self.tensors(prefixes.device)
        node = torch.full(prefixes.shape[:-1], ROOT, dtype=torch.long, device=prefixes.device)
        for t in range(prefixes.shape[-1]):
            node = children[node, prefixes[..., t].clamp(0, self.vocab - 1)]
        return node

    def next_mask(self, prefixes: torch.Tensor) -> torch.Tensor:
        """(..., vocab) bool: the codes that continue each (..., t) prefix towards some catalog item."""
        return self.tensors(prefixes.device)[1][self.walk(prefixes)]

    def items(self, full: torch.Tensor) -> torch.Tensor:
        """The item index of each (..., levels) padded ID, -1 where no catalog item has it."""
        return self.tensors(full.device)[2][self.walk(full)]
