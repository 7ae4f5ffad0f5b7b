"""Every model of seerec, one per file; importing this package registers them all (see recommenders.registry).

pyproject.toml names this package in the `seerec.models` entry-point group, so that configs can validate
`train.<model>` sections without pipeline/ importing a recommender.
"""

from __future__ import annotations

# RPG builds on SASRec (imported from this package), so a plain module import: it registers RPG whichever of
# the two packages is imported first, where `from ... import RPG` would fail inside the circular import.
import recommenders.generative.rpg  # noqa: F401
from recommenders.generative.tiger import TIGER
from recommenders.models.bpr import BPR
from recommenders.models.content_knn import ContentKNN
from recommenders.models.lightgcn import LightGCN
from recommenders.models.popularity import Popularity
from recommenders.models.sasrec import SASRec
from recommenders.models.sasrec_content import SASRecContent
from recommenders.models.two_tower import TwoTower
from recommenders.registry import MODELS

__all__ = ["MODELS", "BPR", "ContentKNN", "LightGCN", "Popularity", "SASRec", "SASRecContent", "TwoTower", "TIGER"]
