"""Make semantic IDs unique. Two items never share an ID.

- `append` (default, as TIGER): add a final level 0, 1, 2, ... among the items that share all L codes, so
  IDs have L + 1 entries. Items without a collision get 0.
- `reassign`: keep L entries; every item after the first in a colliding group moves to the nearest last-level
  code that no item with the same first L-1 codes uses yet. It fails with a clear message when a prefix has
  more items than codes (use `append` then).

`resolve` also serves assign-only runs: `taken` holds the IDs already in the store, which are never
changed, and new items are given IDs that avoid them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from extractors.semantic_ids.base import QuantizeError

METHODS = ("append", "reassign")


def collision_stats(codes: np.ndarray) -> dict:
    """Collision rate before dedup (share of items whose code tuple an earlier item already has) and the
    largest group of items sharing one tuple."""
    codes = np.asarray(codes)
    if len(codes) == 0:
        return {"items": 0, "unique_ids": 0, "collision_rate": 0.0, "colliding_items": 0, "largest_group": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "items": int(len(codes)),
        "unique_ids": int(len(counts)),
        "collision_rate": float(1 - len(counts) / len(codes)),
        "colliding_items": int(counts[counts > 1].sum()),
        "largest_group": int(counts.max()),
    }


def resolve(codes: np.ndarray, method: str = "append", last_distances: np.ndarray | None = None,
            taken: Iterable[Iterable[int]] = ()) -> np.ndarray:
    """Unique IDs for `codes` (N, L) that also avoid every ID in `taken`. Returns int16 (N, L+1) for append,
    (N, L) for reassign. Items are handled in row order, so the result is deterministic."""
    codes = np.asarray(codes, dtype=np.int64)
    taken = [tuple(int(v) for v in t) for t in taken]
    if method == "append":
        ids = _append(codes, taken)
    elif method == "reassign":
        if last_distances is None:
            raise QuantizeError("reassign needs each item's distances to the last-level codes")
        ids = _reassign(codes, np.asarray(last_distances), taken)
    else:
        raise QuantizeError(f"collision method must be one of {', '.join(METHODS)}, not {method!r}")
    if ids.max(initial=0) > np.iinfo(np.int16).max:
        raise QuantizeError("a dedup suffix does not fit in int16: more than 32767 items share one code tuple")
    return ids.astype(np.int16)


def _append(codes: np.ndarray, taken: list[tuple[int, ...]]) -> np.ndarray:
    levels = codes.shape[1]
    used: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for t in taken:
        if len(t) != levels + 1:
            raise QuantizeError(f"existing IDs have {len(t)} entries but append IDs for {levels} levels have "
                                f"{levels + 1}; were they made with another collision method?")
        used[t[:-1]].add(t[-1])
    nxt: dict[tuple[int, ...], int] = defaultdict(int)
    suffix = np.empty(len(codes), np.int64)
    for i, row in enumerate(map(tuple, codes.tolist())):
        s = nxt[row]
        while s in used[row]:
            s += 1
        suffix[i], nxt[row] = s, s + 1
    return np.concatenate([codes, suffix[:, None]], axis=1)


def _reassign(codes: np.ndarray, distances: np.ndarray, taken: list[tuple[int, ...]]) -> np.ndarray:
    levels = codes.shape[1]
    occupied: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for t in taken:
        if len(t) != levels:
            raise QuantizeError(f"existing IDs have {len(t)} entries but reassign keeps {levels}; "
                                "were they made with another collision method?")
        occupied[t[:-1]].add(t[-1])
    ids = codes.copy()
    movers = []
    for i, row in enumerate(map(tuple, codes.tolist())):
        prefix, last = row[:-1], row[-1]
        if last in occupied[prefix]:
            movers.append(i)  # placed after everyone who keeps their own code
        else:
            occupied[prefix].add(last)
    for i in movers:
        prefix = tuple(codes[i, :-1].tolist())
        free = next((int(c) for c in np.argsort(distances[i], kind="stable") if int(c) not in occupied[prefix]), None)
        if free is None:
            raise QuantizeError(f"{len(occupied[prefix]) + 1} items share the prefix {prefix} but the last level "
                                f"has only {distances.shape[1]} codes; use the append collision method")
        occupied[prefix].add(free)
        ids[i, -1] = free
    return ids
