"""Interaction logs of synthetic users, who follow their preferred topics along each topic's hidden item order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.synthetic.topics import TOPICS

MIN_HISTORY, MAX_HISTORY = 8, 30
# The floor below which no user goes, even in a catalog too small for MIN_HISTORY items per user.
HARD_MIN_HISTORY = 5
START_TIME = 1_700_000_000  # 2023-11-14, so timestamps look like real unix seconds.

SWITCH_PROB = 0.2  # a user hops between their preferred topics
SKIP_PROB = 0.15  # a user skips one item of the topic order
NOISE_PROB = 0.1  # a user clicks something random


def simulate_users(ids: list[str], item_topics: np.ndarray, n_users: int, seed: int) -> pd.DataFrame:
    """Interaction logs of users who follow their preferred topics along each topic's hidden item order."""
    order_rng = np.random.default_rng([seed, 2])
    orders = {
        t: [int(i) for i in order_rng.permutation(np.flatnonzero(item_topics == t))]
        for t in range(len(TOPICS))
    }
    user_width = max(4, len(str(n_users)))
    frames = []
    for u in range(n_users):
        rng = np.random.default_rng([seed, 3, u])
        history = _user_history(rng, orders, len(ids))
        times = (
            START_TIME
            + int(rng.integers(0, 30 * 86_400))
            + np.cumsum(rng.integers(60, 6 * 3600, len(history)))
        )
        frames.append(
            pd.DataFrame(
                {
                    "user_id": f"u{u + 1:0{user_width}d}",
                    "item_id": [ids[i] for i in history],
                    "timestamp": times.astype(np.int64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _user_history(rng: np.random.Generator, orders: dict[int, list[int]], n_items: int) -> list[int]:
    """One user's items in time order: mostly the next unseen item of a preferred topic, sometimes noise.

    Histories are capped a little above the number of items in the user's topics, so that in tiny catalogs
    users stop rather than wander off into topics they do not like.
    """
    available = [t for t, items in orders.items() if items]
    prefs = [
        int(t) for t in rng.choice(available, min(int(rng.integers(1, 3)), len(available)), replace=False)
    ]
    main_weight = float(rng.uniform(0.55, 0.8))
    weights = [1.0] if len(prefs) == 1 else [main_weight, 1 - main_weight]
    capacity = sum(len(orders[t]) for t in prefs)
    length = min(
        int(rng.integers(MIN_HISTORY, MAX_HISTORY + 1)), max(HARD_MIN_HISTORY, capacity * 5 // 4), n_items
    )
    # Each topic is entered at a random place; -1 so that the first step lands exactly there.
    cursors = {t: int(rng.integers(len(orders[t]))) - 1 for t in prefs}
    topic = prefs[int(rng.choice(len(prefs), p=weights))]
    seen: set[int] = set()
    history: list[int] = []
    while len(history) < length:
        if rng.random() < SWITCH_PROB:
            topic = prefs[int(rng.choice(len(prefs), p=weights))]
        item = None
        if rng.random() >= NOISE_PROB:
            for t in [topic, *(p for p in prefs if p != topic)]:  # an exhausted topic hands over to the other
                item, cursors[t] = _next_in_order(rng, orders[t], cursors[t], seen)
                if item is not None:
                    topic = t
                    break
        if item is None:
            item = int(rng.choice([i for i in range(n_items) if i not in seen]))
        seen.add(item)
        history.append(item)
    return history


def _next_in_order(
    rng: np.random.Generator, order: list[int], cursor: int, seen: set[int]
) -> tuple[int | None, int]:
    """Step along a topic's order (now and then skipping one) to the first unseen item, and its position."""
    start = cursor + (2 if rng.random() < SKIP_PROB else 1)
    for k in range(len(order)):
        position = (start + k) % len(order)
        if order[position] not in seen:
            return order[position], position
    return None, cursor
