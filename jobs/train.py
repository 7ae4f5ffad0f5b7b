"""Train a recommender (`seerec train`, `python -m jobs.train`), or compare several (`--compare`).

    python -m jobs.train --config cfg.yaml train.model=sasrec train.data.path=../shared/data/amazon-beauty/Beauty.txt
    python -m jobs.train --config cfg.yaml --compare compare.models='[popularity, sasrec, two_tower:text_vec]'
    ray job submit --address http://HEAD:8265 --working-dir . -- python -m jobs.train --config cfg.yaml

The job trains in its own process (on the GPU when one is present), or with `train.workers=N` on N Ray Train
workers (recommenders/distributed.py); under `ray job submit` it runs as the job's entrypoint on the
cluster. See recommenders/runs.py for what a run writes and recommenders/experiment.py for compare.
"""

from __future__ import annotations

import logging
import sys

import pandas as pd

from pipeline.config import SeerecConfig
from recommenders.experiment import run_compare, run_train
from recommenders.runs import RunResult

log = logging.getLogger("seerec.train")


def run_training(cfg: SeerecConfig, compare: bool = False) -> RunResult | pd.DataFrame:
    if compare:
        return run_comparison(cfg)
    return run_train(cfg)


def run_comparison(cfg: SeerecConfig) -> pd.DataFrame:
    table, out_dir = run_compare(cfg)
    log.info("comparison written to %s (compare.md, compare.csv, compare.png)", out_dir)
    return table


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS = {"compare": "train every compare.models entry on one split and write a comparison"}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_training, "Train a recommender on interactions and item-store features.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
