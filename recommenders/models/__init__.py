"""One recommender per file. `MODELS` maps the `train.model` names to their classes."""

from __future__ import annotations

from recommenders.generative.tiger import TIGER
from recommenders.models.bpr import BPR
from recommenders.models.content_knn import ContentKNN
from recommenders.models.lightgcn import LightGCN
from recommenders.models.popularity import Popularity
from recommenders.models.sasrec import SASRec
from recommenders.models.sasrec_content import SASRecContent
from recommenders.models.two_tower import TwoTower

MODELS = {cls.name: cls for cls in (Popularity, ContentKNN, BPR, LightGCN, SASRec, SASRecContent, TwoTower,
                                       TIGER)}

__all__ = ["MODELS", "BPR", "ContentKNN", "LightGCN", "Popularity", "SASRec", "SASRecContent", "TwoTower", "TIGER"]
