"""`make_catalog`: render the items, simulate the users, and write the manifest and the interactions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from jobs.synthetic.items import make_item
from jobs.synthetic.topics import TOPICS
from jobs.synthetic.users import HARD_MIN_HISTORY, simulate_users


@dataclass
class SyntheticCatalog:
    """Where make_catalog wrote its files, and what it made."""

    root: Path
    manifest: Path  # root / "catalog.parquet"
    interactions: Path  # root / "interactions.csv"
    n_items: int
    n_users: int
    n_interactions: int
    topics: list[str]


def make_catalog(
    root: Path,
    n_items: int = 300,
    n_users: int = 400,
    seed: int = 0,
    video_share: float = 0.5,
    progress: bool = False,
) -> SyntheticCatalog:
    """Render the items under root/media and write root/catalog.parquet and root/interactions.csv."""
    if n_items < HARD_MIN_HISTORY:
        raise ValueError(f"n_items must be at least {HARD_MIN_HISTORY}, the fewest items any user gets")
    if n_users < 1 or seed < 0 or not 0.0 <= video_share <= 1.0:
        raise ValueError("n_users must be >= 1, seed >= 0 and video_share within [0, 1]")
    root = Path(root).resolve()
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)

    layout = np.random.default_rng([seed, 0])
    item_topics = layout.permutation(np.arange(n_items) % len(TOPICS))  # as balanced as n_items allows
    is_video = np.zeros(n_items, dtype=bool)
    is_video[layout.permutation(n_items)[: round(video_share * n_items)]] = True
    ids = [f"syn-{i + 1:0{max(4, len(str(n_items)))}d}" for i in range(n_items)]

    rows = [
        make_item(media, ids[i], int(item_topics[i]), bool(is_video[i]), np.random.default_rng([seed, 1, i]))
        for i in tqdm(range(n_items), desc="rendering synthetic items", unit="item", disable=not progress)
    ]
    manifest = root / "catalog.parquet"
    pd.DataFrame(
        rows, columns=["item_id", "media_uri", "media_type", "title", "topic", "metadata"]
    ).to_parquet(manifest, index=False)

    interactions = simulate_users(ids, item_topics, n_users, seed)
    interactions_path = root / "interactions.csv"
    interactions.to_csv(interactions_path, index=False)
    return SyntheticCatalog(
        root=root,
        manifest=manifest,
        interactions=interactions_path,
        n_items=n_items,
        n_users=n_users,
        n_interactions=len(interactions),
        topics=[t.name for t in TOPICS],
    )
